"""ResidualSkip: a skipped block range reproduces the blocks' effect on the step it was cached."""

import torch

import tiny
from stepcache.adapters import adapter_for
from stepcache.core.hooks import HookSet
from stepcache.core.residual import ResidualSkip
from stepcache.core.state import StepContext


class Clock:
    """Stands in for the StepClock: each denoiser call gets a context of its own, on the given branch."""

    current = None

    def call(self, branch: int = 0) -> None:
        self.current = StepContext(run=1, step=0, branch=branch, num_steps=None)


def _out(model, inputs, clock, branch=0):
    clock.call(branch)
    with torch.no_grad():
        out = model(**inputs)
    return out[0] if isinstance(out, tuple) else out.sample


def test_skip_on_the_same_input_matches_the_full_call_and_runs_no_skipped_block():
    for family, ranges in (("dit", [(1, 3)]), ("sd3", [(0, 4)]), ("flux", [(1, 3), (0, 4)])):
        model = tiny.MODELS[family]()
        adapter = adapter_for(model)
        plan = {"skip": None}
        clock = Clock()
        skip = ResidualSkip(adapter, adapter.blocks(), ranges, lambda args, kwargs: plan["skip"], clock)
        hooks = HookSet()
        skip.install(hooks)
        inputs = tiny.model_inputs(family, model)
        full = _out(model, inputs, clock)
        for index, (start, end) in enumerate(ranges):
            ran = []
            probes = HookSet()
            for block in adapter.blocks()[start:end]:
                probes.wrap(adapter.sublayers(block)["attn"][0], lambda o, *a, **k: ran.append(1) or o(*a, **k))
            plan["skip"] = index
            skipped = _out(model, inputs, clock)
            probes.remove()
            plan["skip"] = None
            assert not ran, family
            tiny.assert_within_rounding(skipped, full, tiny.ONE_CALL_EPS)
        hooks.remove()


def test_residuals_are_kept_per_branch():
    model = tiny.dit()
    adapter = adapter_for(model)
    clock = Clock()
    skip = ResidualSkip(adapter, adapter.blocks(), [(0, 4)], lambda args, kwargs: None, clock)
    hooks = HookSet()
    skip.install(hooks)
    for branch in (0, 1):
        _out(model, tiny.model_inputs("dit", model, seed=branch), clock, branch)
    hooks.remove()
    assert skip.has_delta(0, 0) and skip.has_delta(0, 1)
    assert not torch.equal(skip.deltas.latest((0, 0))[0], skip.deltas.latest((0, 1))[0])
