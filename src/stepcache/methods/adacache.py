"""AdaCache: reuse a block range's residual for as long as its rate of change says (arXiv 2411.02397).

After each full step the residual Δ = h_end − h_start of the cached block range (the
whole stack by default) is compared with Δ at the previous full step: the relative L1
distance ‖Δ_now − Δ_prev‖₁ / ‖Δ_prev‖₁ divided by the steps between them (a rate, as
in the paper). A codebook maps the rate to how many steps the new Δ serves: the steps
up to the next full one add it to their fresh block input (``core.residual``). So each
run gets its own schedule, fast-changing content more full steps. Steps 0 and 1 are
full: a rate needs two full steps.

A batch shares one schedule, the most conservative one: the largest rate over its
samples and, under split CFG, over both branches (batched CFG has both in its batch).
Running samples on different schedules would split every step's batch, losing the
batching that makes a step fast, and a shorter reuse than a sample asked for only
costs time, never fidelity. The rate is read back once per full step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..adapters import TRANSFORMER_FAMILIES
from ..core import validate
from ..core.residual import ResidualSkip
from ..core.schedules import adacache_reuse_length
from . import register
from .base import CacheMethod, ReuseConfig

# rate of change (relative L1 per step) below threshold -> steps the residual serves; the paper's
# 100-step codebook scaled to 20-50-step runs
DEFAULT_CODEBOOK = ((0.03, 4), (0.05, 3), (0.08, 2))


@register
@dataclass(frozen=True)
class AdaCacheConfig(ReuseConfig):
    """AdaCache: content-adaptive residual caching; each run's schedule follows how fast the residual changes."""

    method: ClassVar[str] = "adacache"
    families: ClassVar[tuple[str, ...]] = TRANSFORMER_FAMILIES

    # (threshold, reuse length) pairs, thresholds increasing, lengths >= 1 and not increasing;
    # a rate at or above every threshold reuses for 1 step (the next step is full)
    codebook: tuple[tuple[float, int], ...] = DEFAULT_CODEBOOK
    blocks: tuple[int, int] | None = None  # [start, end) block range cached; None = the whole stack

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not isinstance(self.codebook, tuple) or not self.codebook:
            raise ValueError(f"{name}.codebook must be a non-empty tuple of (threshold, length) pairs, "
                             f"got {self.codebook!r}")
        for entry in self.codebook:
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise ValueError(f"{name}.codebook entries must be (threshold, length) pairs, got {entry!r}")
            validate.check_float(name, "codebook threshold", entry[0], 0.0, low_open=True)
            validate.check_int(name, "codebook length", entry[1], 1)
        thresholds = [t for t, _ in self.codebook]
        lengths = [n for _, n in self.codebook]
        if thresholds != sorted(set(thresholds)) or lengths != sorted(lengths, reverse=True):
            raise ValueError(f"{name}.codebook must have strictly increasing thresholds and non-increasing "
                             f"lengths (a bigger change reuses for fewer steps), got {self.codebook!r}")
        if self.blocks is not None:
            if not isinstance(self.blocks, tuple) or len(self.blocks) != 2:
                raise ValueError(f"{name}.blocks must be None or a (start, end) pair, got {self.blocks!r}")
            validate.check_int(name, "blocks start", self.blocks[0], 0)
            validate.check_int(name, "blocks end", self.blocks[1], self.blocks[0] + 1)

    def build(self, adapter, clock) -> "AdaCache":
        return AdaCache(self, adapter, clock)


class AdaCache(CacheMethod):
    def __init__(self, config: AdaCacheConfig, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        blocks = adapter.blocks()
        self.block_range = config.blocks or (0, len(blocks))
        self.skip = ResidualSkip(adapter, blocks, [self.block_range], self._decide, clock, self.new_forecast())
        self._reset_schedule()

    def install(self, hooks) -> None:
        self.skip.install(hooks)

    def _decide(self, args, kwargs):
        return 0 if self._skip_call else None

    # -- runs -----------------------------------------------------------------------------
    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        self._reset_schedule()

    def _reset_schedule(self) -> None:
        self._step = -1
        self._next_full = 0
        self._reuse_now = False
        self._skip_call = False  # the denoiser call in progress adds the cached residual
        self._rate: torch.Tensor | None = None  # largest rate measured at the current full step
        self.full_steps: list[int] = []
        # one per full step from the second on, but the last: a rate is read only when the next step needs it
        self.rates: list[float] = []
        self.reuse_lengths: list[int] = []  # one per full step: how many steps its residual served

    def clear(self) -> None:
        self.skip.clear()
        self._rate = None

    def cache_tensors(self):
        return self.skip.deltas.tensors()

    def extra_stats(self) -> dict:
        return {"block_range": self.block_range, "rates": list(self.rates), "reuse_lengths": list(self.reuse_lengths)}

    # -- denoiser calls -------------------------------------------------------------------
    def model_call(self, ctx, forward, args, kwargs):
        if ctx.step != self._step:
            self._begin_step(ctx.step, ctx.num_steps)
        # a branch first seen on a reusing step (a guidance pass that runs only on some steps) runs in full
        self._skip_call = self._reuse_now and self.skip.has_delta(0, ctx.branch)
        if self._skip_call:
            self.mark_cached()
            return forward(*args, **kwargs)
        previous = self.skip.deltas.latest((0, ctx.branch))
        output = forward(*args, **kwargs)
        if previous is not None:
            gap = self.full_steps[-1] - self.full_steps[-2]
            rate = _relative_l1_rate(self.skip.deltas.latest((0, ctx.branch))[0], previous[0], gap)
            self._rate = rate if self._rate is None else torch.maximum(self._rate, rate)
        return output

    def _begin_step(self, step: int, num_steps: int | None) -> None:
        if self.full_steps and self.full_steps[-1] == self._step:
            self._schedule_next_full()
        self._step = step
        self._reuse_now = step < self._next_full and not self.must_run_full(step, num_steps)
        if not self._reuse_now:
            self.full_steps.append(step)

    def _schedule_next_full(self) -> None:
        """After a full step: how long its residual serves, from the rate it measured."""
        if self._rate is None:
            length = 1  # the run's first full step has nothing to compare with
        else:
            rate = float(self._rate)  # the one device sync per full step
            self.rates.append(rate)
            length = adacache_reuse_length(rate, self.config.codebook)
        self._rate = None
        self.reuse_lengths.append(length)
        self._next_full = self._step + length


def _relative_l1_rate(current: torch.Tensor, previous: torch.Tensor, gap: int) -> torch.Tensor:
    """Largest per-sample ‖current − previous‖₁ / ‖previous‖₁ / gap over the batch (a 0-d tensor)."""
    # summed in float32: half-precision sums over a whole feature map overflow
    change = (current - previous).abs().flatten(1).sum(1, dtype=torch.float32)
    scale = previous.abs().flatten(1).sum(1, dtype=torch.float32).clamp_min(torch.finfo(torch.float32).tiny)
    return (change / scale).max() / gap
