"""Δ-DiT (arXiv 2406.01125): skip a range of blocks by adding their cached offset Δ.

Δ-Cache over blocks [s, e): on a full step the blocks run and Δ = h_e − h_s is kept per
CFG branch; on a cached step they are skipped and h_e = h_s + Δ, with h_s computed this
step (``core.residual.ResidualSkip`` does the skipping). Full steps are i % N == 0 of the
run, as in FORA, so N = 1 never skips.

Stage-adaptive (the default): before the boundary step b the last k blocks are skipped
(the front blocks keep building the outline), from b on the first k blocks (the back
blocks keep refining detail). A cached step right after b may use a front-range Δ from
the full step before b: ResidualSkip records every candidate range on a full step, and
only the ranges a following cached step will use are kept.

No code from Δ-DiT's authors is known to stepcache, so there is no reference to follow: both
values of ``convention`` run the method as described here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..adapters import BLOCKS
from ..core import validate
from ..core.residual import ResidualSkip
from ..core.schedules import check_interval, is_before_boundary, resolve_step, reuse_steps
from . import register
from .base import FORECAST_GRID, CacheMethod, ReuseConfig

DEFAULT_NUM_BLOCKS = 4
DEFAULT_BOUNDARY = 0.5


@register
@dataclass(frozen=True)
class DeltaDiTConfig(ReuseConfig):
    """Δ-DiT: skip k blocks by adding their cached offset; back blocks early, front blocks late.

    interval: N >= 1; full steps are i % N == 0, and N must fit the run (1..T-1, or 1).
    num_blocks: k, blocks skipped per cached step, 1..(blocks in the model); None = 4.
    boundary: first step of the late stage, a step index or a fraction of the run; None = 0.5.
    blocks: a fixed (start, end) block range skipped on every cached step instead of the
        stage-adaptive ranges; cannot be combined with num_blocks or boundary.
    """

    method: ClassVar[str] = "delta_dit"
    requires: ClassVar[frozenset[str]] = frozenset({BLOCKS})
    default_grids: ClassVar[tuple] = ({"interval": [2, 3, 4]}, {"interval": [2, 3], **FORECAST_GRID})

    interval: int = 2
    num_blocks: int | None = None
    boundary: int | float | None = None
    blocks: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        validate.check_int("DeltaDiTConfig", "interval", self.interval, 1)
        if self.num_blocks is not None:
            validate.check_int("DeltaDiTConfig", "num_blocks", self.num_blocks, 1)
        if self.boundary is not None:
            validate.check_step("DeltaDiTConfig", "boundary", self.boundary)
        if self.blocks is not None:
            if self.num_blocks is not None or self.boundary is not None:
                raise ValueError(
                    "DeltaDiTConfig.blocks fixes one block range and cannot be combined with "
                    f"num_blocks={self.num_blocks!r} or boundary={self.boundary!r} (the stage-adaptive mode)"
                )
            _check_range(self.blocks, None)
            object.__setattr__(self, "blocks", tuple(self.blocks))  # a list would make the config unhashable

    def build(self, adapter, clock) -> "DeltaDiT":
        return DeltaDiT(self, adapter, clock)


def _check_range(blocks, num_model_blocks: int | None) -> None:
    """A (start, end) block range; its end is checked against the model once it is known."""
    high = "the model's block count" if num_model_blocks is None else str(num_model_blocks)
    valid = (
        isinstance(blocks, (tuple, list)) and len(blocks) == 2
        and all(isinstance(i, int) and not isinstance(i, bool) for i in blocks)
        and 0 <= blocks[0] < blocks[1] and (num_model_blocks is None or blocks[1] <= num_model_blocks)
    )
    if not valid:
        raise ValueError(
            f"DeltaDiTConfig.blocks must be a (start, end) pair of block indices with "
            f"0 <= start < end <= {high}, got {blocks!r}"
        )


class DeltaDiT(CacheMethod):
    """One ResidualSkip over the early-stage and late-stage ranges (one range in the fixed mode)."""

    def __init__(self, config: DeltaDiTConfig, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        blocks = adapter.blocks()
        count = len(blocks)
        if config.blocks is not None:
            _check_range(config.blocks, count)
            ranges = [config.blocks]
        else:
            k = config.num_blocks if config.num_blocks is not None else DEFAULT_NUM_BLOCKS
            if k > count:
                raise ValueError(
                    f"DeltaDiTConfig.num_blocks must be an integer in [1, {count}] for this "
                    f"{type(adapter.model).__name__} ({count} blocks), got {k}"
                )
            ranges = [(count - k, count), (0, k)]  # early stage: back blocks; late stage: front blocks
        self.skip = ResidualSkip(adapter, blocks, ranges, self.new_forecast())
        self._boundary: int | None = None  # resolved per run; None in the fixed mode (one stage)

    def install(self, hooks) -> None:
        self.skip.install(hooks)

    def _range_at(self, step: int) -> int:
        """Index into the ranges of the one a cached step ``step`` skips."""
        if self._boundary is None or is_before_boundary(step, self._boundary):
            return 0
        return 1

    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        config = self.config
        if record.num_steps is not None:
            check_interval(config.interval, record.num_steps, "DeltaDiTConfig.interval")
        if config.blocks is not None:
            self._boundary = None
            return
        if record.num_steps is None:
            raise RuntimeError(
                "Δ-DiT's stage boundary needs the run length: pass scheduler= to stepcache.apply() "
                "or call handle.start_run(num_steps) before the loop"
            )
        boundary = config.boundary if config.boundary is not None else DEFAULT_BOUNDARY
        self._boundary = resolve_step(boundary, record.num_steps, "DeltaDiTConfig.boundary")

    def before_call(self, ctx, args, kwargs):
        index = self._range_at(ctx.step)
        # a branch first seen on a reusing step (a guidance pass that runs only on some steps) runs in full
        skipping = bool(ctx.step % self.config.interval) and self.skip.has_delta(index, ctx.branch) \
            and not self.must_run_full(ctx.step, ctx.num_steps)
        self.skip.begin_call(ctx, index if skipping else None)
        if skipping:
            self.mark_cached()
        return args, kwargs

    def after_call(self, ctx, output):
        skip = self.skip
        if skip.skipping:
            return output
        skip.keep(ctx)
        if self.config.order:
            # a forecast keeps the offsets of every full step, as the nodes of its polynomial, while a later
            # step may still skip their range
            later = range(ctx.step + 1, ctx.num_steps) if ctx.num_steps is not None else ()
        else:
            later = reuse_steps(ctx.step, self.config.interval, ctx.num_steps)
        needed = {self._range_at(step) for step in later if not self.must_run_full(step, ctx.num_steps)}
        for index in range(len(skip.ranges)):
            if index not in needed:
                skip.deltas.pop((index, ctx.branch))  # no step before the next full one skips it
        return output

    def call_ended(self, ctx) -> None:
        self.skip.end_call()

    def clear(self) -> None:
        self.skip.clear()

    def cache_tensors(self):
        return self.skip.deltas.tensors()

    def extra_stats(self) -> dict:
        stages = ("early", "late") if len(self.skip.ranges) == 2 else ("all",)
        return {
            "skipped_blocks": {stage: list(r) for stage, r in zip(stages, self.skip.ranges)},
            "boundary_step": self._boundary,
        }
