"""Δ-DiT: exact at N = 1, MACs as the schedule predicts, per-branch offsets, per-call reset, clear errors."""

import pytest
from transformer_pipes import (
    assert_branches_kept_apart,
    assert_each_call_starts_afresh,
    assert_exact_and_restored,
    assert_macs_match,
    generate,
    hidden_bytes,
    pipeline,
)

import stepcache
import tiny
from stepcache.adapters import adapter_for


@pytest.mark.parametrize("family", ["dit", "pixart", "sd3", "flux"])
def test_interval_one_is_bit_identical_and_remove_restores_exactly(family):
    assert_exact_and_restored(family, stepcache.DeltaDiTConfig(interval=1, num_blocks=2))


@pytest.mark.parametrize(
    "family,options,skipped_at",
    [
        # 4 blocks, k = 2, default boundary = half of 4 steps: step 1 skips the back, step 2 the front
        # (with the front offset from step 0, the full step before the boundary)
        ("dit", dict(num_blocks=2), {1: (2, 4), 2: (0, 2)}),
        ("pixart", dict(num_blocks=2), {1: (2, 4), 2: (0, 2)}),
        ("sd3", dict(num_blocks=2), {1: (2, 4), 2: (0, 2)}),
        ("flux", dict(num_blocks=2), {1: (2, 4), 2: (0, 2)}),  # back = the single-stream blocks
        ("flux", dict(blocks=(1, 3)), {1: (1, 3), 2: (1, 3)}),  # across the dual -> single change
    ],
)
def test_executed_macs_match_the_schedule(family, options, skipped_at):
    def skipped(stats, model):
        assert stats["cached_step_indices"] == sorted(skipped_at)
        blocks = adapter_for(model).blocks()
        return [block for start, end in skipped_at.values() for block in blocks[start:end]]

    assert_macs_match(family, 4, stepcache.DeltaDiTConfig(interval=3, **options), skipped)


def test_each_pipeline_call_starts_afresh_and_frees_its_offsets():
    config = stepcache.DeltaDiTConfig(interval=2, num_blocks=3, boundary=0.4)
    stats = assert_each_call_starts_afresh("pixart", config, 5)
    assert stats["cached_step_indices"] == [1, 3] and stats["boundary_step"] == 2


@pytest.mark.parametrize("family", ["dit", "flux"])
def test_split_and_batched_cfg_keep_one_offset_per_branch(family):
    config = stepcache.DeltaDiTConfig(interval=2, num_blocks=2, boundary=2)
    held, stats = assert_branches_kept_apart(family, config, 5)
    assert stats["cached_step_indices"] == [1, 3]
    # each full step keeps only the range its next step skips, and the last one keeps nothing
    assert held == [held[0]] * 4 + [0]
    if family == "dit":  # one hidden-state offset for both CFG halves
        assert held[0] == hidden_bytes("dit", batch=2)


def test_bad_parameters_name_the_allowed_range():
    with pytest.raises(ValueError, match=r"DeltaDiTConfig.interval must be an integer in \[1, inf\], got 0"):
        stepcache.DeltaDiTConfig(interval=0)
    with pytest.raises(ValueError, match=r"DeltaDiTConfig.num_blocks must be an integer in \[1, inf\], got 0"):
        stepcache.DeltaDiTConfig(num_blocks=0)
    with pytest.raises(ValueError, match=r"DeltaDiTConfig.boundary must be a number in \[0.0, 1.0\], got 1.5"):
        stepcache.DeltaDiTConfig(boundary=1.5)
    for blocks in ((2, 2), (3, 1), (-1, 2), (0, 1, 2), "02"):
        with pytest.raises(ValueError, match=r"DeltaDiTConfig.blocks must be a \(start, end\) pair .*0 <= start < end"):
            stepcache.DeltaDiTConfig(blocks=blocks)
    with pytest.raises(ValueError, match=r"blocks fixes one block range and cannot be combined with num_blocks=2"):
        stepcache.DeltaDiTConfig(blocks=(0, 2), num_blocks=2)
    with pytest.raises(ValueError, match=r"num_blocks must be an integer in \[1, 4\] for this DiTTransformer2DModel"):
        stepcache.apply(tiny.dit(), stepcache.DeltaDiTConfig(num_blocks=5))
    with pytest.raises(ValueError, match=r"0 <= start < end <= 4, got \(1, 5\)"):
        stepcache.apply(tiny.dit(), stepcache.DeltaDiTConfig(blocks=(1, 5)))


def test_run_dependent_parameters_are_checked_when_the_run_starts():
    pipe = pipeline("dit")
    with stepcache.cached(pipe, stepcache.DeltaDiTConfig(num_blocks=2, boundary=9)):
        with pytest.raises(ValueError, match=r"DeltaDiTConfig.boundary=9 is outside this run of 4 steps \(allowed 0..4\)"):
            generate(pipe, "dit", 4)
    with stepcache.cached(pipe, stepcache.DeltaDiTConfig(interval=4, num_blocks=2)):
        with pytest.raises(ValueError, match=r"DeltaDiTConfig.interval=4 does not fit this run of 4 steps"):
            generate(pipe, "dit", 4)
    model = tiny.dit()
    with stepcache.cached(model, stepcache.DeltaDiTConfig(num_blocks=2)):
        with pytest.raises(RuntimeError, match="pass scheduler= to stepcache.apply"):
            model(**tiny.model_inputs("dit", model))
    with stepcache.cached(model, stepcache.DeltaDiTConfig(blocks=(1, 3))) as handle:
        model(**tiny.model_inputs("dit", model))  # a fixed range needs no run length
        assert handle.stats()["full_steps"] == 1
