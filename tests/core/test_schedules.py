import math

import pytest

from stepcache.core.schedules import (
    adacache_reuse_length,
    check_interval,
    is_before_boundary,
    is_uniform_full_step,
    nonuniform_full_steps,
    resolve_step,
    tgate_self_attn_reuse_steps,
    reuse_steps,
    teacache_step,
    uniform_full_steps,
)


def test_uniform_schedule_exact():
    assert uniform_full_steps(10, 3) == [0, 3, 6, 9]
    assert uniform_full_steps(5, 1) == [0, 1, 2, 3, 4]
    assert uniform_full_steps(4, 10) == [0]
    assert [is_uniform_full_step(i, 3) for i in range(5)] == [True, False, False, True, False]


def test_nonuniform_schedule_exact():
    assert nonuniform_full_steps(50, 5, center=15, power=1.4) == [0, 6, 11, 14, 15, 19, 24, 29, 35, 42]
    assert nonuniform_full_steps(20, 2, center=10, power=1.4) == [0, 3, 6, 8, 9, 10, 11, 12, 14, 17]
    assert nonuniform_full_steps(10, 1, center=5, power=1.4) == list(range(10))


@pytest.mark.parametrize("steps,interval,center", [(50, 5, 25), (50, 3, 10), (25, 2, 12), (100, 10, 40)])
def test_nonuniform_schedule_invariants(steps, interval, center):
    full = nonuniform_full_steps(steps, interval, center=center, power=1.4)
    assert len(full) == math.ceil(steps / interval)  # same compute as the uniform schedule
    assert full[0] == 0 and full == sorted(set(full)) and full[-1] < steps
    gaps = [b - a for a, b in zip(full, full[1:])]
    near = [g for a, g in zip(full, gaps) if abs(a - center) <= interval]
    assert min(near) <= min(gaps[0], gaps[-1])  # denser around the centre than at the ends


def test_nonuniform_schedule_rejects_bad_parameters():
    with pytest.raises(ValueError, match="power must be > 1"):
        nonuniform_full_steps(50, 5, center=10, power=1.0)
    with pytest.raises(ValueError, match="center"):
        nonuniform_full_steps(50, 5, center=50, power=1.4)
    with pytest.raises(ValueError, match="interval"):
        nonuniform_full_steps(50, 0, center=10, power=1.4)


def test_resolve_step_takes_indices_and_fractions():
    assert resolve_step(0.5, 20, "boundary") == 10
    assert resolve_step(1.0, 20, "boundary") == 20
    assert resolve_step(7, 20, "boundary") == 7
    with pytest.raises(ValueError, match="boundary=21 is outside this run of 20 steps"):
        resolve_step(21, 20, "boundary")
    with pytest.raises(ValueError, match="fraction"):
        resolve_step(1.5, 20, "boundary")


def test_stage_boundary():
    assert [is_before_boundary(i, 2) for i in range(4)] == [True, True, False, False]


def test_reuse_steps_run_to_the_next_full_step_or_the_end():
    assert list(reuse_steps(0, 3, 10)) == [1, 2]
    assert list(reuse_steps(9, 3, 10)) == []
    assert list(reuse_steps(8, 4, 10)) == [9]
    assert list(reuse_steps(4, 1, 10)) == []
    assert list(reuse_steps(6, 3, None)) == [7, 8]


def test_check_interval_allows_one_to_steps_minus_one():
    check_interval(9, 10, "interval")
    check_interval(1, 1, "interval")
    with pytest.raises(ValueError, match=r"interval=10 does not fit this run of 10 steps \(allowed 1..9\)"):
        check_interval(10, 10, "interval")
    with pytest.raises(ValueError, match=r"allowed 1..1"):
        check_interval(2, 2, "interval")


def test_tgate_self_attention_reuse_steps_exact():
    assert tgate_self_attn_reuse_steps(10, gate_step=8, interval=3, warmup=0) == [1, 2, 4, 5, 7]
    assert tgate_self_attn_reuse_steps(10, gate_step=8, interval=3, warmup=2) == [3, 4, 6, 7]
    assert tgate_self_attn_reuse_steps(10, gate_step=10, interval=1, warmup=0) == []
    assert tgate_self_attn_reuse_steps(10, gate_step=1, interval=4, warmup=0) == []
    with pytest.raises(ValueError, match="interval >= 1"):
        tgate_self_attn_reuse_steps(10, gate_step=11, interval=2, warmup=0)


def test_adacache_codebook_exact():
    codebook = ((0.03, 4), (0.05, 3), (0.08, 2))
    assert [adacache_reuse_length(d, codebook) for d in (0.0, 0.0299, 0.03, 0.049, 0.07, 0.08, 5.0)] == [
        4, 4, 3, 3, 2, 1, 1]
    assert adacache_reuse_length(0.001, ((1.0, 1),)) == 1


def test_teacache_step_accumulates_until_the_threshold_and_keeps_first_and_last_full():
    assert teacache_step(0.0, 0.0, 0.5, 0, 5) == (False, 0.0)  # first step: always full
    assert teacache_step(0.0, 0.25, 0.5, 1, 5) == (True, 0.25)
    assert teacache_step(0.25, 0.125, 0.5, 2, 5) == (True, 0.375)
    assert teacache_step(0.375, 0.25, 0.5, 3, 5) == (False, 0.625)  # reached the threshold: full
    assert teacache_step(0.0, 0.0, 0.5, 4, 5) == (False, 0.0)  # last step: always full
    assert teacache_step(0.0, 0.0, 0.0, 2, 5) == (False, 0.0)  # threshold 0 never skips
    assert teacache_step(0.0, 0.0, 1.0, 0, 1) == (False, 0.0)
    with pytest.raises(ValueError, match="at least one step"):
        teacache_step(0.0, 0.1, 0.5, 0, 0)
