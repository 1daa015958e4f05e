"""torch.compile with every method: compiled outputs equal eager ones, and dynamo never recompiles per step.

Each case runs a tiny pipeline three times under dynamo's "eager" backend (graphs are
captured and run as captured, no code generation): the first call may compile once per
compute path (full step, cached step, the pieces around a decision), later calls with the
same shapes compile nothing, and no guard that failed reads stepcache's step counters or a
method's statistic. Compiling with ``model.compile()`` before or after ``apply``, with
``torch.compile(model)``'s wrapper in place of the model, and with
``compile_repeated_blocks()`` (the families that have it) are all covered.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters, guard_failures

import stepcache
import tiny
from family_pipes import generate, pipeline

CALLS = 3
STEPS = 5

IDENTITY = (1.0, 0.0)  # TeaCache coefficients: the thresholds below are for tiny random models

# (family, config, how the model is compiled): every method on the families it runs on, every way of compiling
CASES = [
    ("dit", stepcache.FORAConfig(2), "compile after apply"),
    ("dit", stepcache.DeltaDiTConfig(2, num_blocks=2), "compile before apply"),
    ("dit", stepcache.TeaCacheConfig(0.3, coefficients=IDENTITY), "compile after apply"),
    ("dit", stepcache.AdaCacheConfig(codebook=((0.5, 2), (1.0, 1))), "torch.compile wrapper, then apply"),
    ("pixart", stepcache.TGateConfig(gate_step=2), "compile after apply"),
    ("pixart", stepcache.FORAConfig(2, order=1), "apply, then torch.compile wrapper"),
    ("sd3", stepcache.TeaCacheConfig(0.3, coefficients=IDENTITY), "compile before apply"),
    ("sd3", stepcache.DeltaDiTConfig(2, num_blocks=2), "compile after apply"),
    ("flux", stepcache.FORAConfig(2), "compile repeated blocks"),
    ("flux", stepcache.TeaCacheConfig(0.3, coefficients=IDENTITY), "compile repeated blocks"),
    ("flux", stepcache.AdaCacheConfig(codebook=((0.5, 2), (1.0, 1))), "compile after apply"),
    ("flux", stepcache.FORAConfig(2, order=1), "compile repeated blocks before apply"),
    ("flux", stepcache.DeltaDiTConfig(2, num_blocks=2), "compile repeated blocks"),
    ("unet", stepcache.DeepCacheConfig(interval=2), "compile after apply"),
    ("unet", stepcache.TGateConfig(gate_step=2), "compile repeated blocks"),
]

# names a guard would read if dynamo traced stepcache's bookkeeping: step counters, schedules, statistics
BOOKKEEPING = re.compile(r"\b(clock|_step|runs|cached_steps|record|accumulated|previous_signal|_rate|rates|_sums|"
                         r"full_steps|_next_full|_caches|deltas|_features)\b")


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def dynamo_warnings():
    """A fresh dynamo, and the warnings it logs (hitting ``recompile_limit`` is one: it then runs eagerly)."""
    torch._dynamo.reset()
    counters.clear()
    guard_failures.clear()
    handler = _Warnings()
    logger = logging.getLogger("torch._dynamo.convert_frame")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
    torch._dynamo.reset()


def _compiled_and_cached(pipe, config, how: str, backend):
    """Apply ``config`` and compile the denoiser ``how`` says; returns the handle."""
    name = "unet" if hasattr(pipe, "unet") else "transformer"
    model = getattr(pipe, name)
    if how == "compile before apply":
        model.compile(backend=backend)
        return stepcache.apply(pipe, config)
    if how == "compile after apply":
        handle = stepcache.apply(pipe, config)
        model.compile(backend=backend)
        return handle
    if how == "torch.compile wrapper, then apply":
        setattr(pipe, name, torch.compile(model, backend=backend))
        return stepcache.apply(pipe, config)
    if how == "apply, then torch.compile wrapper":
        handle = stepcache.apply(pipe, config)
        setattr(pipe, name, torch.compile(model, backend=backend))
        return handle
    if how == "compile repeated blocks before apply":
        model.compile_repeated_blocks(backend=backend)
        return stepcache.apply(pipe, config)
    assert how == "compile repeated blocks"
    handle = stepcache.apply(pipe, config)
    model.compile_repeated_blocks(backend=backend)
    return handle


@pytest.mark.parametrize("family, config, how", CASES, ids=[f"{f}-{c.method}-{h.replace(' ', '_')}"
                                                          for f, c, h in CASES])
def test_compiled_cache_equals_eager_and_compiles_only_in_the_first_call(family, config, how, dynamo_warnings):
    pipe = pipeline(family)
    with stepcache.cached(pipe, config) as handle:
        eager = generate(pipe, family, STEPS)
        schedule = handle.stats()["cached_step_indices"]
    assert 0 < len(schedule) < STEPS - 1  # both paths run: the test would prove nothing otherwise

    backend = CompileCounter()
    handle = _compiled_and_cached(pipe, config, how, backend)
    graphs = []
    for _ in range(CALLS):
        images = generate(pipe, family, STEPS)
        graphs.append(backend.frame_count)
        assert handle.stats()["cached_step_indices"] == schedule
        tiny.assert_within_rounding(images, eager, tiny.TINY_RUN_EPS)
    handle.remove()

    assert graphs[0] > 0  # the model did compile
    assert graphs == [graphs[0]] * CALLS, f"recompiled after the first call: graphs after each call {graphs}"
    # bounded by the compute paths, not by the steps: each path is a few graphs (the pieces around a decision,
    # and under regional compilation one per distinct block role)
    assert graphs[0] <= 16, graphs
    # each failed guard's expression (a reason's first line, up to the source comment)
    reasons = [reason.splitlines()[0].split("#")[0] for failures in guard_failures.values() for reason in failures]
    assert not [r for r in reasons if BOOKKEEPING.search(r)], reasons
    # hitting dynamo's limit would run the rest eagerly, compiling its pieces one by one
    assert not [m for m in dynamo_warnings if "recompile_limit" in m], dynamo_warnings
