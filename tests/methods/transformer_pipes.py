"""What the transformer-method tests share: tiny pipelines of every family and the checks every method passes.

Kept apart from tests/tiny.py because it is about running a *cached* model: exactness
and restoration, per-module MAC counts to predict a schedule's cost, and hand-written
CFG loops that record the cache's size at every step.
"""

from __future__ import annotations

import functools

import torch

import stepcache
import tiny
from family_pipes import PIPELINES as _FAMILIES, generate, pipeline  # noqa: F401 (test modules import them here)
from stepcache.bench.macs import macs_by_module, macs_of

PIPELINES = {family: _FAMILIES[family] for family in ("dit", "pixart", "sd3", "flux")}


def _module_state(model) -> dict:
    """Every module's own attribute names: what remove() must leave as it found them."""
    return {name: sorted(module.__dict__) for name, module in model.named_modules()}


def assert_exact_and_restored(family: str, config, steps: int = 3) -> None:
    """``config`` (a no-cache setting) gives the uncached images bit for bit, and remove() undoes it."""
    pipe = pipeline(family)
    reference = generate(pipe, family, steps)
    before = _module_state(pipe.transformer)  # after a call: FLUX fills caches of its own on the first
    with stepcache.cached(pipe, config) as handle:
        assert torch.equal(generate(pipe, family, steps), reference)
        assert handle.stats()["cached_steps"] == 0
    assert torch.equal(generate(pipe, family, steps), reference)
    assert _module_state(pipe.transformer) == before


def assert_each_call_starts_afresh(family: str, config, steps: int) -> dict:
    """Two calls of one cached pipeline give the same images and stats; returns those stats."""
    pipe = pipeline(family)
    with stepcache.cached(pipe, config) as handle:
        first, first_stats = generate(pipe, family, steps), handle.stats()
        second, second_stats = generate(pipe, family, steps), handle.stats()
    assert torch.equal(first, second)
    assert {**first_stats, "runs": 0} == {**second_stats, "runs": 0}
    assert (first_stats["runs"], second_stats["runs"]) == (1, 2)
    assert first_stats["cache_bytes"] == 0  # freed at the end of the run
    return first_stats


def _module_paths(model) -> dict[int, str]:
    """id(module) -> its name in ``macs_by_module`` counts (e.g. "DiTTransformer2DModel.transformer_blocks.0")."""
    root = type(model).__name__
    return {id(m): f"{root}.{name}" if name else root for name, m in model.named_modules()}


@functools.lru_cache(maxsize=None)
def _uncached_macs_by_name(family: str, steps: int) -> dict[str, int]:
    # counting is slow and a fresh tiny pipeline is the same every time: count once per session
    pipe = pipeline(family)
    return macs_by_module(lambda: generate(pipe, family, steps))[1]


def assert_macs_match(family: str, steps: int, config, skipped) -> dict:
    """Executed MACs under ``config`` are within 1% of the uncached call's minus what ``skipped`` names.

    ``skipped(stats, model)`` lists the modules not run, once per step that skips them
    (e.g. a block skipped on two steps appears twice); a ``(module, fraction)`` entry
    stands for that fraction of the module's MACs. Returns the run's stats.
    """
    pipe = pipeline(family)
    by_name = _uncached_macs_by_name(family, steps)
    with stepcache.cached(pipe, config) as handle:
        _, macs = macs_of(lambda: generate(pipe, family, steps))
        stats = handle.stats()
    paths = _module_paths(pipe.transformer)
    entries = [e if isinstance(e, tuple) else (e, 1) for e in skipped(stats, pipe.transformer)]
    saved = sum(by_name[paths[id(module)]] * fraction // steps for module, fraction in entries)
    predicted = by_name["Global"] - saved
    assert 0 < saved and abs(macs - predicted) <= 0.01 * predicted
    return stats


@functools.lru_cache(maxsize=None)
def _uncached_latents(family: str, cfg: str, steps: int) -> torch.Tensor:
    return tiny.denoise(tiny.MODELS[family](), family, tiny.ddim(), steps, cfg=cfg)


def _cfg_run(family: str, config, cfg: str, steps: int):
    """(final latents, cache bytes held during each step, stats after the run) of a hand-written CFG loop."""
    model = tiny.MODELS[family]()
    scheduler = tiny.ddim()
    held = []
    step = scheduler.step

    def recording_step(*args, **kwargs):
        held.append(handle.stats()["cache_bytes"])  # read before the step closes
        return step(*args, **kwargs)

    scheduler.step = recording_step
    handle = stepcache.apply(model, config, scheduler=scheduler)
    latents = tiny.denoise(model, family, scheduler, steps, cfg=cfg)
    stats = handle.stats()
    handle.remove()
    return latents, held, stats


def assert_branches_kept_apart(family: str, config, steps: int) -> tuple[list[int], dict]:
    """Split CFG (one cache per branch) ends where batched CFG does; returns (bytes held per step, stats).

    A branch reading the other branch's cache would move split far from batched, and the
    cache must matter (split differs from the uncached loop), or the check proves nothing.
    """
    batched, batched_held, batched_stats = _cfg_run(family, config, "batched", steps)
    split, split_held, split_stats = _cfg_run(family, config, "split", steps)
    tiny.assert_within_rounding(split, batched, tiny.TINY_RUN_EPS)
    assert (split - _uncached_latents(family, "split", steps)).abs().max() > 1e-2
    assert split_stats["cached_step_indices"] == batched_stats["cached_step_indices"]
    assert (split_stats["calls"], batched_stats["calls"]) == (2 * steps, steps)
    assert split_held == batched_held  # two half-batch branches hold what one full batch does
    assert split_stats["cache_bytes"] == batched_stats["cache_bytes"] == 0
    return batched_held, batched_stats


def hidden_bytes(family: str, batch: int) -> int:
    """Bytes of one image-token hidden state (batch, tokens, dim) of a tiny ``family`` model, float32."""
    model = tiny.MODELS[family]()
    tokens = (model.config.sample_size // model.config.patch_size) ** 2
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    return batch * tokens * dim * 4
