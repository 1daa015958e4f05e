"""Pure schedule functions: which steps of a run are full, where stage boundaries fall.

Everything here is a function of (step index, total steps, parameters), with no state,
so each method's schedule can be checked on its own.
"""

from __future__ import annotations

import math

import numpy as np


def uniform_full_steps(num_steps: int, interval: int) -> list[int]:
    """1:N schedule: step i is full when i % N == 0 (so step 0 is always full)."""
    _check_run(num_steps)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    return list(range(0, num_steps, interval))


def is_uniform_full_step(step: int, interval: int) -> bool:
    return step % interval == 0


def nonuniform_full_steps(num_steps: int, interval: int, center: int, power: float) -> list[int]:
    """DeepCache's non-uniform 1:N schedule: ceil(T/N) full steps, denser around ``center``.

    Evenly spaced points u in [-center^(1/p), (T-center)^(1/p)] are mapped through
    u -> sign(u)|u|^p + center and truncated to step indices; because |u|^p grows slowly
    near 0, the indices bunch up around ``center``. De-duplication can leave too few,
    in which case p is lowered by 0.02 until the count is right (as DeepCache does).
    Step 0 is always full. Raises ValueError if no p > 1 gives the count.
    """
    _check_run(num_steps)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    if not 0 <= center < num_steps:
        raise ValueError(f"center must be a step index in [0, {num_steps - 1}], got {center}")
    if power <= 1:
        raise ValueError(f"power must be > 1, got {power}")
    count = math.ceil(num_steps / interval)
    if count == num_steps:
        return list(range(num_steps))
    p = power
    while p > 1:
        u = np.linspace(-(center ** (1 / p)), (num_steps - center) ** (1 / p), count + 1)
        offsets = np.unique(np.trunc(np.sign(u) * np.abs(u) ** p).astype(np.int64))
        # the first point maps to step 0 and the last to T (past the end): both dropped, 0 re-added
        indices = [0] + [int(o + center) for o in offsets[1:-1]]
        if len(indices) == count and len(set(indices)) == count and indices[-1] < num_steps:
            return sorted(indices)
        p = round(p - 0.02, 10)
    raise ValueError(
        f"no power in (1, {power}] places {count} full steps around center {center} in a run "
        f"of {num_steps} steps; move the center towards the middle or lower the interval"
    )


def deepcache_reference_full_steps(num_steps: int, interval: int, center: int, power: float) -> list[int]:
    """The DeepCache repository's non-uniform schedule, computed as its ``sample_from_quad_center`` does.

    The same ceil(T/N) points as ``nonuniform_full_steps``, but the map is plain ``u ** p``
    (complex for the negative points, whose real part the repository keeps when it casts
    to int32) and p is lowered by 0.02 in floating point until the de-duplicated count is
    right, without checking the indices' range. For center 0 both agree; otherwise the
    steps before the center come out differently: T=50, N=5, center 15, power 1.4 gives
    [0, 5, 9, 13, 17, 21, 26, 31, 37, 43] here and [0, 6, 11, 14, 15, 19, 24, 29, 35, 42]
    in ``nonuniform_full_steps``. Raises ValueError where the repository does.
    """
    _check_run(num_steps)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    count = math.ceil(num_steps / interval)
    if interval == 1:
        return list(range(num_steps))
    p = power
    while p > 1:
        u = np.linspace((-center) ** (1 / p), (num_steps - center) ** (1 / p), count + 1)
        offsets = np.unique(np.real(u ** p).astype(np.int32))
        indices = [0] + [int(o) + center for o in offsets[1:-1]]
        if len(indices) == count:
            return sorted(indices)
        p -= 0.02
    raise ValueError(f"no power in (1, {power}] places {count} full steps around center {center} in a run of "
                     f"{num_steps} steps (the DeepCache repository's schedule); move the center or lower the interval")


def resolve_step(value: int | float, num_steps: int, name: str) -> int:
    """A step given as an index (int) or as a fraction of the run (float in [0, 1]) -> index.

    A fraction f maps to round(f * T), so 0.5 of a 20-step run is step 10, and 1.0 is T
    (one past the last step: "never"). An index must lie in [0, T].
    """
    _check_run(num_steps)
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} as a fraction must lie in [0, 1], got {value}")
        return int(round(value * num_steps))
    if not 0 <= value <= num_steps:
        raise ValueError(f"{name}={value} is outside this run of {num_steps} steps (allowed 0..{num_steps})")
    return value


def is_before_boundary(step: int, boundary: int) -> bool:
    """Stage split: steps 0..boundary-1 are the early (noisy) stage, boundary.. the late stage."""
    return step < boundary


def teacache_step(
    accumulated: float, distance: float, threshold: float, step: int, num_steps: int
) -> tuple[bool, float]:
    """TeaCache's accumulator at one step: (skip the step?, the accumulated distance it compared).

    The rescaled distance of this step is added to what accumulated since the last full
    step; the step is skipped while that sum stays below ``threshold``. The first and
    last steps are always full. After a full step the caller restarts from 0, after a
    skipped one from the returned sum.
    """
    _check_run(num_steps)
    total = accumulated + distance
    return (0 < step < num_steps - 1 and total < threshold), total


def _check_run(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"a run needs at least one step, got {num_steps}")


def reuse_steps(full_step: int, interval: int, num_steps: int | None) -> range:
    """The steps of a uniform 1:N schedule that reuse what step ``full_step`` computed.

    They run up to the next full step (a multiple of N; ``full_step`` itself may lie between
    two, when a CFG branch is first computed on a reusing step), or to the end of the run
    when its length is known (``num_steps`` None: unknown, so the whole interval is assumed).
    """
    stop = (full_step // interval + 1) * interval
    if num_steps is not None:
        stop = min(stop, num_steps)
    return range(full_step + 1, stop)


def check_interval(interval: int, num_steps: int, name: str) -> None:
    """A cache interval N must fit the run: N in [1, T-1] (FORA's range), and N = 1 for any T.

    N >= T would leave step 0 as the only full step, reused to the end: raise instead of
    quietly running a schedule nobody chose.
    """
    _check_run(num_steps)
    highest = max(1, num_steps - 1)
    if not 1 <= interval <= highest:
        raise ValueError(
            f"{name}={interval} does not fit this run of {num_steps} steps (allowed 1..{highest}); "
            "lower it or run more steps"
        )


def tgate_self_attn_reuse_steps(num_steps: int, gate_step: int, interval: int, warmup: int) -> list[int]:
    """T-GATE's partial self-attention caching: the steps that reuse self-attention.

    Only steps before the gate reuse (from the gate on, self-attention runs every step).
    Before it, the first ``warmup`` steps are computed, then every ``interval``-th step
    counted from the end of the warm-up; the steps in between reuse the last one.
    """
    _check_run(num_steps)
    if interval < 1 or warmup < 0 or not 0 <= gate_step <= num_steps:
        raise ValueError(f"need interval >= 1, warmup >= 0, gate_step in [0, {num_steps}]; "
                         f"got {interval}, {warmup}, {gate_step}")
    return [i for i in range(max(warmup, 1), gate_step) if (i - warmup) % interval != 0]


def tgate_self_attn_reused(num_steps: int, gate_step: int, interval: int, warmup: int, interval_after_gate: int,
                           reference: bool = False) -> list[int]:
    """T-GATE's self-attention over a whole run: the steps that reuse it (each from the last step that computed it).

    stepcache's convention: before the gate as ``tgate_self_attn_reuse_steps``; from the gate
    on, every ``interval_after_gate``-th step counted from the gate computes it and the
    steps in between reuse it (the gate step computes it: nothing carries across the gate).
    The reference's (the tgate package's ``tgate_scheduler`` with ``sp_interval`` = ``interval``,
    ``warm_up`` = ``warmup``, ``fi_interval`` = ``interval_after_gate``): the steps up to
    ``warmup`` compute it, later steps before the gate reuse it unless ``i % interval == 0``,
    the step before the gate always computes it (its output is carried across the gate as
    the CFG mean, like the cross-attention), and from the gate on a step reuses it unless
    ``i % interval_after_gate == 0``.
    """
    reuse = tgate_self_attn_reuse_steps(num_steps, gate_step, interval, warmup)  # checks the arguments
    if interval_after_gate < 1:
        raise ValueError(f"need interval_after_gate >= 1, got {interval_after_gate}")
    after = range(gate_step, num_steps)
    if reference:
        return [i for i in range(warmup + 1, gate_step - 1) if i % interval] + \
            [i for i in after if i % interval_after_gate]
    return reuse + [i for i in after if (i - gate_step) % interval_after_gate]


def adacache_reuse_length(distance: float, codebook: tuple[tuple[float, int], ...], reference: bool = False) -> int:
    """AdaCache's codebook: a residual's rate of change -> for how many steps to reuse it.

    ``codebook`` holds (threshold, length) pairs with increasing thresholds; a distance
    below a threshold gets its length (the first that matches). One at or above every
    threshold gets 1 (the next step is full again); with ``reference``, as in the AdaCache
    repository, the last entry is the fallback: a distance not below any earlier threshold
    gets the last entry's length, whatever its threshold.
    """
    entries = codebook[:-1] if reference else codebook
    for threshold, length in entries:
        if distance < threshold:
            return length
    return codebook[-1][1] if reference else 1


def fora_reference_is_full(step: int, num_steps: int, interval: int) -> bool:
    """FORA's repository schedule: its loop counts down (i = T-1 .. 0) and a step is full when it is
    the first one or i % N == 0, so the last step (i = 0) is always full. Equals i % N == 0 in
    forward counting only when (T - 1) % N == 0."""
    return step == 0 or (num_steps - 1 - step) % interval == 0
