"""The fewer-steps baseline: the same sampler run with fewer steps at the compute a cache spends.

A caching method that does not beat simply sampling less at equal MACs is not worth
using, so every config is paired with an uncached run of ``round(T * MAC ratio)`` steps.
"""

from __future__ import annotations


def matching_steps(num_steps: int, mac_ratio: float) -> int:
    """Steps of an uncached run costing about ``mac_ratio`` of a ``num_steps`` run (at least 1, at most T)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < mac_ratio:
        raise ValueError(f"mac_ratio must be > 0, got {mac_ratio}")
    return max(1, min(num_steps, round(num_steps * mac_ratio)))


def baseline_steps(num_steps: int, mac_ratios: list[float]) -> list[int]:
    """The distinct fewer-steps runs (descending) that match ``mac_ratios``, excluding T itself."""
    steps = {matching_steps(num_steps, r) for r in mac_ratios}
    steps.discard(num_steps)
    return sorted(steps, reverse=True)
