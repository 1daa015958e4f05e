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

Motion regularisation (MoReg, the paper's section 3.3; ``moreg=True``, for video models):
at each full step inside ``moreg_window`` the residual's motion score m is measured, the
relative L1 change between its frames ``moreg_strides`` apart (||r[f+i] − r[f]||₁ over
||r[f+i]||₁ + ||r[f]||₁, averaged over the strides), normalised as
m' = (m / moreg_norm) ** moreg_power, and the rate is multiplied by m' + |g|, where
g = moreg_gradient · (m' − m'_prev) / (steps since the last full step) is its motion
gradient. Fast motion (m > moreg_norm) or a changing amount of it shortens the reuse,
still content lengthens it. The frames come from the adapter (the model's token layout);
the score is per sample, like the rate. The reference convention (its
``compute_next_step``) pools the score over the batch, measures it on the last of the
signal blocks, divides the gradient by the reuse length in force and counts the
window's edges too: outside the window m' = 1, and m'_prev starts each run at 1, so the
factor jumps where the window opens and closes. stepcache's convention leaves the rate
alone outside the window and starts the gradient at the window's first measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..adapters import BLOCKS, FRAMES, GATED_ATTENTION
from ..core import validate
from ..core.residual import ResidualSkip
from ..core.schedules import adacache_reuse_length, resolve_step
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
    # motion regularisation (module docstring), for video models; off by default. The defaults are the
    # AdaCache repository's (configs/sample_adacache_moreg.py: moreg_hyp (0.385, 8, 1), mograd_mul 10)
    moreg: bool = False
    moreg_strides: tuple[int, ...] = (1,)  # frame distances the motion is measured over, averaged
    # the full steps whose rate is regularised, first and last included: indices, or fractions of the run
    moreg_window: tuple[int | float, int | float] = (0.1, 0.9)
    moreg_norm: float = 0.385  # the motion score that leaves the rate as it is
    moreg_power: float = 8.0  # how sharply the factor grows and falls around moreg_norm
    moreg_gradient: float = 10.0  # weight of the motion gradient

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
        if not isinstance(self.moreg, bool):
            raise ValueError(f"{name}.moreg must be True or False, got {self.moreg!r}")
        if not isinstance(self.moreg_strides, tuple) or not self.moreg_strides:
            raise ValueError(f"{name}.moreg_strides must be a non-empty tuple of frame strides, got "
                             f"{self.moreg_strides!r}")
        for stride in self.moreg_strides:
            validate.check_int(name, "moreg_strides entry", stride, 1)
        if not isinstance(self.moreg_window, tuple) or len(self.moreg_window) != 2:
            raise ValueError(f"{name}.moreg_window must be a (first, last) pair of steps, got {self.moreg_window!r}")
        for edge in self.moreg_window:
            validate.check_step(name, "moreg_window", edge)
        if all(isinstance(edge, int) for edge in self.moreg_window) and self.moreg_window[0] > self.moreg_window[1]:
            raise ValueError(f"{name}.moreg_window must not end before it starts, got {self.moreg_window!r}")
        validate.check_float(name, "moreg_norm", self.moreg_norm, 0.0, low_open=True)
        validate.check_float(name, "moreg_power", self.moreg_power, 0.0, low_open=True)
        validate.check_float(name, "moreg_gradient", self.moreg_gradient, 0.0)

    def needs(self) -> frozenset[str]:
        # the reference convention measures the gated self-attention output; MoReg compares a video's frames
        return self.requires | ({GATED_ATTENTION} if self.reference else set()) | ({FRAMES} if self.moreg else set())

    def build(self, adapter, clock) -> "AdaCache":
        return AdaCache(self, adapter, clock)


class AdaCache(CacheMethod):
    adaptive = True

    def __init__(self, config: AdaCacheConfig, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        blocks = adapter.blocks()
        self.block_range = config.blocks or (0, len(blocks))
        self.skip = ResidualSkip(adapter, blocks, [self.block_range], self.new_forecast())
        self.signal = _AttentionSignal(adapter, blocks, config.signal_blocks,
                                       config.moreg_strides if config.moreg else None) if config.reference else None
        self.motion = _Motion(config) if config.moreg else None
        self._reset_schedule()

    def install(self, hooks) -> None:
        self.skip.install(hooks)
        if self.signal is not None:
            self.signal.install(hooks)

    # -- runs -----------------------------------------------------------------------------
    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        self._reset_schedule()
        if self.motion is not None:
            if self.sharding.size > 1:
                # a frame difference pairs tokens a whole frame apart, which another rank may hold
                raise ValueError("AdaCacheConfig(moreg=True) compares the frames of each video, and this model "
                                 f"splits one video's tokens over {self.sharding.size} ranks ({self.sharding.source}); "
                                 "run MoReg without context parallelism, or set moreg=False")
            self.motion.start_run(record.num_steps)

    def _reset_schedule(self) -> None:
        self._step = -1
        self._next_full = 0
        self._reuse_now = False
        self._call_frames: int | None = None  # MoReg: the frames of the full call in progress, if measured
        # per CFG branch of the current full step, [change, scale] L1 sums per sample (2 x batch); the rate is
        # formed from them at the decision, after they are added over the ranks that hold parts of the image
        self._sums: list[torch.Tensor] = []
        self.full_steps: list[int] = []
        # one per full step from the second on, but the last: a rate is read only when the next step needs it
        self.rates: list[float] = []
        self.reuse_lengths: list[int] = []  # one per full step: how many steps its residual served
        self.motion_factors: list[float] = []  # MoReg: per rate, the largest factor it was multiplied by

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
        if self.motion is not None:
            stats["motion_factors"] = list(self.motion_factors)
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
        self._call_frames = self._frames(args, kwargs)
        if self.signal is not None:
            self.signal.begin(ctx.branch, self._call_frames)
        return args, kwargs

    def after_call(self, ctx, output):
        if self.skip.skipping:
            return output
        previous = self.skip.deltas.latest((0, ctx.branch))
        self.skip.keep(ctx)
        if self.signal is None and previous is not None:
            latest = self.skip.deltas.latest((0, ctx.branch))[0]
            sums = _l1_sums(latest, previous[0])
            if self._call_frames is not None:  # MoReg's rows below the rate's two
                sums = torch.cat([sums, frame_change(latest, self._call_frames, self.config.moreg_strides)])
            self._sums.append(sums)
        return output

    def call_ended(self, ctx) -> None:
        self.skip.end_call()
        self._call_frames = None
        if self.signal is not None:
            self.signal.end()

    def _frames(self, args, kwargs) -> int | None:
        """MoReg, at a full step inside its window: how many frames this call's image tokens hold; else None."""
        if self.motion is None or not self.motion.inside(self.full_steps[-1]):
            return None
        return self.adapter.token_frames(args, kwargs)

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
        factor = None  # MoReg's factor on the rate (per sample, or pooled under the reference convention)
        if self.signal is not None:
            # divided by the reuse length in force, not by the steps since the last full step
            in_force = self.reuse_lengths[-1] if self.reuse_lengths else 1
            rate = self.signal.rate(in_force, lambda sums: self.sharding.sum(sums, self._step))
            if rate is not None and self.motion is not None:
                # the reference multiplies the blocks' average rate by the last signal block's factor
                factor = self.motion.factor(self.signal.motion(), self._step, in_force)
                rate = rate * factor
            if rate is not None:
                # compared as the reference compares a tensor with a Python number: in the tensor's dtype
                codebook = tuple((torch.tensor(t, dtype=rate.dtype).item(), n) for t, n in codebook)
        elif self._sums:
            sums = self.sharding.sum(torch.cat(self._sums, dim=1), self._step)
            gap = self.full_steps[-1] - self.full_steps[-2]
            if self.motion is not None:
                factor = self.motion.factor(sums[2:] if len(sums) > 2 else None, self._step, gap)
            rate = _rate_from_sums(sums, gap, factor)
        else:
            rate = None
        self._sums = []
        if rate is None:
            length = 1  # the run's first full step has nothing to compare with
        else:
            if self.motion is None:
                rate = float(rate)  # the one device sync per full step
            else:
                largest = torch.ones(()) if factor is None else factor.max()
                rate, largest = torch.stack([rate.float(), largest.to(rate.device, torch.float32)]).tolist()
                self.motion_factors.append(largest)
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

    def __init__(self, adapter, blocks, indices: tuple[int, ...] | None,
                 motion_strides: tuple[int, ...] | None = None) -> None:
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
        self.motion_strides = motion_strides  # MoReg: measured on the last slot's output
        self._frames: int | None = None  # frames in the image tokens of the call in progress (None: no MoReg)
        self._motion: torch.Tensor | None = None  # MoReg's frame_change rows of the last slot, summed this step

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
                    if self._frames is not None and slot == len(self.blocks) - 1:
                        rows = frame_change(residual, self._frames, self.motion_strides).sum(1)  # pooled batch
                        self._motion = rows if self._motion is None else self._motion + rows
                self._previous[key] = residual
            return output

        return forward

    def begin(self, branch: int, frames: int | None = None) -> None:
        """A full denoiser call of CFG branch ``branch`` starts: measure it (MoReg: in ``frames`` frames)."""
        self._branch, self._frames = branch, frames

    def end(self) -> None:
        self._branch = self._frames = None
        self._call.clear()

    def motion(self) -> torch.Tensor | None:
        """MoReg's frame_change rows of the last signal block this step, pooled over batch and branches; then reset.

        Not reduced over ranks: MoReg refuses models that split a video's tokens over ranks.
        """
        motion, self._motion = self._motion, None
        return motion

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
        self._motion = None
        self._call.clear()
        self._branch = None

    def tensors(self):
        return list(self._previous.values())


def _l1(x: torch.Tensor) -> torch.Tensor:
    """Per-sample L1 norm, summed in float32: half-precision sums over a whole feature map overflow."""
    return x.abs().flatten(1).sum(1, dtype=torch.float32)


def _l1_sums(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Per sample, ‖current − previous‖₁ and ‖previous‖₁ (2 x batch, float32)."""
    return torch.stack([_l1(current - previous), _l1(previous)])


def _rate_from_sums(sums: torch.Tensor, gap: int, factor: torch.Tensor | None = None) -> torch.Tensor:
    """Largest per-sample ‖current − previous‖₁ / ‖previous‖₁ / gap over the samples (a 0-d tensor).

    ``sums``' first two rows are ``_l1_sums``'; MoReg's per-sample ``factor`` multiplies each sample's rate.
    """
    change, scale = sums[0], sums[1]
    rates = change / scale.clamp_min(torch.finfo(torch.float32).tiny)
    return (rates if factor is None else rates * factor).max() / gap


def frame_change(residual: torch.Tensor, frames: int, strides: tuple[int, ...]) -> torch.Tensor:
    """MoReg's frame differences of ``residual`` (batch, tokens, ...), whose tokens are ``frames`` equal runs.

    Per stride i and sample, ‖r[f+i] − r[f]‖₁ and ‖r[f+i]‖₁ + ‖r[f]‖₁ summed over the frames f
    (the tokens from frame i on against those up to frame F − i, as the AdaCache repository
    slices them): rows (change_i, scale_i) for each stride, in float32 (2·len(strides) x batch).
    """
    tokens = residual.shape[1]
    if tokens % frames or max(strides) >= frames:
        raise ValueError(f"AdaCacheConfig.moreg_strides {strides} need more frames than the largest stride in "
                         f"tokens that split into whole frames; this call has {tokens} tokens in {frames} frames")
    per_frame = tokens // frames
    rows = []
    for stride in strides:
        later, earlier = residual[:, stride * per_frame:], residual[:, :-stride * per_frame]
        rows += [_l1(later - earlier), _l1(later) + _l1(earlier)]
    return torch.stack(rows)


def motion_score(change: torch.Tensor) -> torch.Tensor:
    """The motion score from ``frame_change`` rows: change_i / scale_i averaged over the strides, per column."""
    ratios = change[0::2] / change[1::2].clamp_min(torch.finfo(torch.float32).tiny)
    return ratios.mean(0)


class _Motion:
    """MoReg's factor on the rate: m' + |g| from the motion score m (module docstring), over one run."""

    def __init__(self, config: AdaCacheConfig) -> None:
        self.config = config
        self.window: tuple[int, int] = (0, -1)
        self._previous: torch.Tensor | float | None = None  # m' at the last full step that measured one

    def start_run(self, num_steps: int | None) -> None:
        edges = self.config.moreg_window
        if num_steps is None and any(isinstance(edge, float) for edge in edges):
            raise RuntimeError(f"AdaCacheConfig.moreg_window {edges} is given in fractions of the run, which needs "
                               "the run's length: pass scheduler= to stepcache.apply() or call "
                               "handle.start_run(num_steps) before the loop (or give the window in steps)")
        # a step index past the run's end is a window that closes with the run
        self.window = tuple(resolve_step(edge, num_steps, "moreg_window") if isinstance(edge, float) else edge
                            for edge in edges)
        self._previous = 1.0 if self.config.reference else None  # the repository's prev_moreg starts at 1

    def inside(self, step: int) -> bool:
        return self.window[0] <= step <= self.window[1]

    def factor(self, change: torch.Tensor | None, step: int, gap: int) -> torch.Tensor | None:
        """The factor at full step ``step``, ``gap`` steps after the last (``change``: ``frame_change`` rows, summed
        over the batch under the reference convention; None outside the window). None: leave the rate alone."""
        config = self.config
        if change is None or not self.inside(step):
            if not config.reference:
                self._previous = None  # the gradient restarts where the window next opens
                return None
            normalised = torch.ones(())  # the reference's moreg = 1 outside its window, gradient still taken
        else:
            normalised = (motion_score(change) / config.moreg_norm) ** config.moreg_power
        previous = self._previous
        if previous is None or (isinstance(previous, torch.Tensor) and previous.shape != normalised.shape):
            gradient = torch.zeros_like(normalised)  # the first measurement (or the batch changed)
        else:
            gradient = config.moreg_gradient * (normalised - previous) / gap
        self._previous = normalised
        return normalised + gradient.abs()
