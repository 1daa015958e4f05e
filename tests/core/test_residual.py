"""ResidualSkip: a skipped block range reproduces the blocks' effect on the step it was cached."""

import torch

import tiny
from stepcache.adapters import adapter_for
from stepcache.core.hooks import HookSet
from stepcache.core.residual import ResidualSkip
from stepcache.core.state import StepContext


def _out(model, inputs, skip, branch=0, skip_range=None):
    """One denoiser call of CFG branch ``branch``, skipping ``skip_range``, as a method drives it."""
    ctx = StepContext(run=1, step=0, branch=branch, num_steps=None)
    skip.begin_call(ctx, skip_range)
    with torch.no_grad():
        out = model(**inputs)
    skip.keep(ctx)
    skip.end_call()
    return out[0] if isinstance(out, tuple) else out.sample


def test_skip_on_the_same_input_matches_the_full_call_and_runs_no_skipped_block():
    for family, ranges in (("dit", [(1, 3)]), ("sd3", [(0, 4)]), ("flux", [(1, 3), (0, 4)])):
        model = tiny.MODELS[family]()
        adapter = adapter_for(model)
        skip = ResidualSkip(adapter, adapter.blocks(), ranges)
        hooks = HookSet()
        skip.install(hooks)
        inputs = tiny.model_inputs(family, model)
        full = _out(model, inputs, skip)
        for index, (start, end) in enumerate(ranges):
            ran = []
            probes = HookSet()
            for block in adapter.blocks()[start:end]:
                probes.wrap(adapter.sublayers(block)["attn"][0], lambda o, *a, **k: ran.append(1) or o(*a, **k))
            skipped = _out(model, inputs, skip, skip_range=index)
            probes.remove()
            assert not ran, family
            tiny.assert_within_rounding(skipped, full, tiny.ONE_CALL_EPS)
        hooks.remove()


def test_residuals_are_kept_per_branch():
    model = tiny.dit()
    adapter = adapter_for(model)
    skip = ResidualSkip(adapter, adapter.blocks(), [(0, 4)])
    hooks = HookSet()
    skip.install(hooks)
    for branch in (0, 1):
        _out(model, tiny.model_inputs("dit", model, seed=branch), skip, branch)
    hooks.remove()
    assert skip.has_delta(0, 0) and skip.has_delta(0, 1)
    assert not torch.equal(skip.deltas.latest((0, 0))[0], skip.deltas.latest((0, 1))[0])
