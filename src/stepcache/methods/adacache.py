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

Sequence parallelism: each rank holds a part of every sample's tokens. The per-sample
L1 sums of every branch are kept until the decision, added over the ranks in one
all-reduce (core/distributed.py) and divided only then, so every rank gets the
single-process rate and schedule.

``convention="reference"`` does what the AdaCache repository (Open-Sora's STDiT3) does:
the rate is the relative L1 change of the gated self-attention output of the blocks in
``signal_blocks`` (its ``cache_loc``; default the middle block), pooled over the whole
batch (and every CFG branch), divided by the reuse length in force rather than the steps
since the last full one, and averaged over those blocks; a rate not below any threshold
but the last gets the last entry's length; and the last two steps are always full. The
repository adds each block's cached attention and MLP residuals where stepcache adds the
range's residual once: the same sum, so outputs agree up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..adapters import BLOCKS, GATED_ATTENTION
from ..core import validate
from ..core.residual import ResidualSkip
from ..core.schedules import adacache_reuse_length
from . import register
from .base import FORECAST_GRID, CacheMethod, ReuseConfig

# rate of change (relative L1 per step) below threshold -> steps the residual serves; the paper's
# 100-step codebook scaled to 20-50-step runs
DEFAULT_CODEBOOK = ((0.03, 4), (0.05, 3), (0.08, 2))


@register
@dataclass(frozen=True)
class AdaCacheConfig(ReuseConfig):
    """AdaCache: content-adaptive residual caching; each run's schedule follows how fast the residual changes."""

    method: ClassVar[str] = "adacache"
    requires: ClassVar[frozenset[str]] = frozenset({BLOCKS})
    # (rate threshold, reuse steps) codebooks: conservative, the method's default, aggressive
    default_grids: ClassVar[tuple] = (
        {"codebook": [((0.02, 3), (0.04, 2)), DEFAULT_CODEBOOK, ((0.05, 5), (0.08, 4), (0.12, 2))]},
        {"codebook": [DEFAULT_CODEBOOK, ((0.05, 4), (0.1, 3), (0.2, 2))], **FORECAST_GRID})

    # (threshold, reuse length) pairs, thresholds increasing, lengths >= 1 and not increasing;
    # a rate at or above every threshold reuses for 1 step (the next step is full; convention="reference":
    # a rate not below any threshold but the last reuses for the last entry's length)
    codebook: tuple[tuple[float, int], ...] = DEFAULT_CODEBOOK
    blocks: tuple[int, int] | None = None  # [start, end) block range cached; None = the whole stack
    # convention="reference" only: the blocks whose gated self-attention output gives the rate (the
    # reference's cache_loc); None = the middle one of the blocks that have one
    signal_blocks: tuple[int, ...] | None = None

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
        if self.signal_blocks is not None:
            if not self.reference:
                raise ValueError(f"{name}.signal_blocks is read only by convention='reference' (the reference's "
                                 "cache_loc); stepcache's convention measures the cached range's residual")
            if not isinstance(self.signal_blocks, tuple) or not self.signal_blocks or \
                    len(set(self.signal_blocks)) != len(self.signal_blocks):
                raise ValueError(f"{name}.signal_blocks must be None or a non-empty tuple of distinct block "
                                 f"indices, got {self.signal_blocks!r}")
            for index in self.signal_blocks:
                validate.check_int(name, "signal_blocks entry", index, 0)

    def needs(self) -> frozenset[str]:
        # the reference convention measures the gated self-attention output
        return self.requires | {GATED_ATTENTION} if self.reference else self.requires

    def build(self, adapter, clock) -> "AdaCache":
        return AdaCache(self, adapter, clock)


class AdaCache(CacheMethod):
    adaptive = True

    def __init__(self, config: AdaCacheConfig, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        blocks = adapter.blocks()
        self.block_range = config.blocks or (0, len(blocks))
        self.skip = ResidualSkip(adapter, blocks, [self.block_range], self.new_forecast())
        self.signal = _AttentionSignal(adapter, blocks, config.signal_blocks) if config.reference else None
        self._reset_schedule()

    def install(self, hooks) -> None:
        self.skip.install(hooks)
        if self.signal is not None:
            self.signal.install(hooks)

    # -- runs -----------------------------------------------------------------------------
    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        self._reset_schedule()

    def _reset_schedule(self) -> None:
        self._step = -1
        self._next_full = 0
        self._reuse_now = False
        # per CFG branch of the current full step, [change, scale] L1 sums per sample (2 x batch); the rate is
        # formed from them at the decision, after they are added over the ranks that hold parts of the image
        self._sums: list[torch.Tensor] = []
        self.full_steps: list[int] = []
        # one per full step from the second on, but the last: a rate is read only when the next step needs it
        self.rates: list[float] = []
        self.reuse_lengths: list[int] = []  # one per full step: how many steps its residual served

    def clear(self) -> None:
        self.skip.clear()
        self._sums = []
        if self.signal is not None:
            self.signal.clear()

    def cache_tensors(self):
        return [self.skip.deltas.tensors(), self.signal.tensors() if self.signal is not None else ()]

    def extra_stats(self) -> dict:
        stats = {"block_range": self.block_range, "rates": list(self.rates), "reuse_lengths": list(self.reuse_lengths)}
        if self.signal is not None:
            stats["signal_blocks"] = list(self.signal.indices)
        return stats

    # -- denoiser calls -------------------------------------------------------------------
    def before_call(self, ctx, args, kwargs):
        if ctx.step != self._step:
            self._begin_step(ctx.step, ctx.num_steps)
        # a branch first seen on a reusing step (a guidance pass that runs only on some steps) runs in full
        if self._reuse_now and self.skip.has_delta(0, ctx.branch):
            self.skip.begin_call(ctx, 0)
            self.mark_cached()
            return args, kwargs
        self.skip.begin_call(ctx, None)
        if self.signal is not None:
            self.signal.begin(ctx.branch)
        return args, kwargs

    def after_call(self, ctx, output):
        if self.skip.skipping:
            return output
        previous = self.skip.deltas.latest((0, ctx.branch))
        self.skip.keep(ctx)
        if self.signal is None and previous is not None:
            self._sums.append(_l1_sums(self.skip.deltas.latest((0, ctx.branch))[0], previous[0]))
        return output

    def call_ended(self, ctx) -> None:
        self.skip.end_call()
        if self.signal is not None:
            self.signal.end()

    def _begin_step(self, step: int, num_steps: int | None) -> None:
        if self.full_steps and self.full_steps[-1] == self._step:
            self._schedule_next_full()
        self._step = step
        self._reuse_now = step < self._next_full and not self.must_run_full(step, num_steps)
        if self.config.reference:
            if num_steps is None:
                raise RuntimeError("AdaCacheConfig(convention='reference') keeps the last two steps full and needs "
                                   "the run's length: pass scheduler= to stepcache.apply() or call "
                                   "handle.start_run(num_steps) before the loop")
            self._reuse_now = self._reuse_now and step < num_steps - 2
        if not self._reuse_now:
            self.full_steps.append(step)

    def _schedule_next_full(self) -> None:
        """After a full step: how long its residual serves, from the rate it measured."""
        codebook = self.config.codebook
        # whether there is a rate depends on run state only (a previous full step), the same on every rank,
        # so every rank reaches the reduction inside at the same decision
        if self.signal is not None:
            # divided by the reuse length in force, not by the steps since the last full step
            rate = self.signal.rate(self.reuse_lengths[-1] if self.reuse_lengths else 1,
                                    lambda sums: self.sharding.sum(sums, self._step))
            if rate is not None:
                # compared as the reference compares a tensor with a Python number: in the tensor's dtype
                codebook = tuple((torch.tensor(t, dtype=rate.dtype).item(), n) for t, n in codebook)
        elif self._sums:
            sums = self.sharding.sum(torch.cat(self._sums, dim=1), self._step)
            rate = _rate_from_sums(sums, self.full_steps[-1] - self.full_steps[-2])
        else:
            rate = None
        self._sums = []
        if rate is None:
            length = 1  # the run's first full step has nothing to compare with
        else:
            rate = float(rate)  # the one device sync per full step
            self.rates.append(rate)
            length = adacache_reuse_length(rate, codebook, reference=self.config.reference)
        self.reuse_lengths.append(length)
        self._next_full = self._step + length


class _AttentionSignal:
    """The reference convention's signal: the gated self-attention outputs of a few blocks at full steps.

    Per block, the L1 norm of its change since the block's last full step and the L1 norm of
    that earlier output, each over the whole batch and summed over the step's CFG branches;
    ``rate`` turns them into the reference's number.
    """

    def __init__(self, adapter, blocks, indices: tuple[int, ...] | None) -> None:
        gated = [i for i, block in enumerate(blocks) if adapter.gated_attention(block) is not None]
        if not gated:
            raise ValueError(f"AdaCacheConfig(convention='reference') measures a block's gated self-attention, "
                             f"and no block of this {type(adapter.model).__name__} has one")
        if indices is None:
            indices = (gated[(len(gated) - 1) // 2],)  # the repository's 13 of 28 blocks
        for index in indices:
            if index not in gated:
                raise ValueError(f"AdaCacheConfig.signal_blocks has {index}, which is not a block of this "
                                 f"{type(adapter.model).__name__} with a gated self-attention; allowed: {gated}")
        self.adapter = adapter
        self.indices = tuple(sorted(indices))  # measured and averaged in the order the model runs them
        self.blocks = [blocks[i] for i in self.indices]
        self._branch: int | None = None  # the CFG branch of the full call in progress; None: not measuring
        self._call: dict[int, tuple] = {}  # signal slot -> (block args, kwargs, gate output) of this call
        self._previous: dict[tuple[int, int], torch.Tensor] = {}  # (slot, branch) -> output at its last full step
        self._norms: dict[int, list] = {}  # slot -> [L1 of the change, L1 of the earlier output] this step

    def install(self, hooks) -> None:
        for slot, block in enumerate(self.blocks):
            attention, gate_module = self.adapter.gated_attention(block)
            hooks.wrap(block, self._record(slot, 0))
            if gate_module is not None:
                hooks.wrap(gate_module, self._record(slot, 2))
            hooks.wrap(attention, self._measure(slot, block))

    def _record(self, slot: int, position: int):
        def forward(original, *args, **kwargs):
            if self._branch is None:
                return original(*args, **kwargs)
            if position == 0:  # the block: its inputs, which PixArt's gate is computed from
                self._call[slot] = (args, kwargs, None)
                return original(*args, **kwargs)
            output = original(*args, **kwargs)
            if slot in self._call:
                self._call[slot] = (*self._call[slot][:2], output)
            return output

        return forward

    def _measure(self, slot: int, block):
        def forward(original, *args, **kwargs):
            output = original(*args, **kwargs)
            if self._branch is not None and slot in self._call:
                block_args, block_kwargs, gate_output = self._call.pop(slot)
                residual = self.adapter.attention_residual(block, output, gate_output, block_args, block_kwargs)
                key = (slot, self._branch)
                previous = self._previous.get(key)
                if previous is not None:
                    dims = tuple(range(residual.ndim))
                    change, scale = (previous - residual).norm(dim=dims, p=1), previous.norm(dim=dims, p=1)
                    norms = self._norms.get(slot)
                    self._norms[slot] = [change, scale] if norms is None else [norms[0] + change, norms[1] + scale]
                self._previous[key] = residual
            return output

        return forward

    def begin(self, branch: int) -> None:
        """A full denoiser call of CFG branch ``branch`` starts: measure it."""
        self._branch = branch

    def end(self) -> None:
        self._branch = None
        self._call.clear()

    def rate(self, reuse_length: int, reduce) -> torch.Tensor | None:
        """The step's rate, as the reference's ``compute_next_step`` forms it; None before two full steps.

        ``reduce`` adds the [slot, (change, scale)] norms over the ranks that hold parts of the image.
        """
        if not self._norms:
            return None
        slots = sorted(self._norms)
        norms = reduce(torch.stack([torch.stack(self._norms[slot]) for slot in slots]))
        average, count = 0, 0
        for change, scale in norms:
            rate = change / scale / reuse_length
            average, count = (rate + count * average) / (count + 1), count + 1
        self._norms.clear()
        return average

    def clear(self) -> None:
        self._previous.clear()
        self._norms.clear()
        self._call.clear()
        self._branch = None

    def tensors(self):
        return list(self._previous.values())


def _l1_sums(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Per sample, ‖current − previous‖₁ and ‖previous‖₁ (2 x batch, float32)."""
    # summed in float32: half-precision sums over a whole feature map overflow
    change = (current - previous).abs().flatten(1).sum(1, dtype=torch.float32)
    return torch.stack([change, previous.abs().flatten(1).sum(1, dtype=torch.float32)])


def _rate_from_sums(sums: torch.Tensor, gap: int) -> torch.Tensor:
    """Largest per-sample ‖current − previous‖₁ / ‖previous‖₁ / gap over the samples (a 0-d tensor)."""
    change, scale = sums[0], sums[1]
    return (change / scale.clamp_min(torch.finfo(torch.float32).tiny)).max() / gap
