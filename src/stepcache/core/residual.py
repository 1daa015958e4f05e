"""Skip a contiguous run of blocks by adding their cached residual to the fresh input.

Shared by the methods that cache "what a range of blocks adds" rather than a block's
output (Δ-DiT's Δ-Cache, TeaCache's whole-stack residual, AdaCache): on a refresh step
the blocks run and Δ = h_end − h_start is stored per CFG branch; on a skip step
h_end = h_start + Δ, where h_start was computed this step, so the current step's
information still flows past the skipped blocks.

Works on any model through its adapter's ``block_state`` / ``output_state`` /
``make_output``, so blocks that pass several tensors on (MMDiT: image and text
tokens) are handled alike.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .forecast import Forecast

BlockRange = tuple[int, int]  # [start, end) block indices
# decide(block_args, block_kwargs) -> index into ranges to skip this call, or None to run every block;
# only a range whose residual this call's branch has (``has_delta``) may be skipped
Decider = Callable[[tuple, dict], "int | None"]


class ResidualSkip:
    """Hooks over ``blocks`` that skip one of ``ranges`` per denoiser call.

    Around each denoiser call the method calls ``begin_call(ctx, skip)`` with the range to
    skip (or None), ``keep(ctx)`` after it to store the residuals the call measured, and
    ``end_call()`` however it ended. A method that decides from the first block's inputs
    passes ``decide`` instead, which the first block's hook asks (TeaCache).

    The hooks run inside the model's compiled graph under ``torch.compile``; what they read
    (the range to skip, the residual to add) is set before the call, and what they measure
    is kept after it, so no step number or statistic enters the graph. ``decide`` runs
    outside it: a graph break at the first block, where the decision is taken.
    """

    def __init__(self, adapter, blocks: Sequence[nn.Module], ranges: Sequence[BlockRange],
                 deltas: Forecast | None = None, decide: Decider | None = None):
        for start, end in ranges:
            if not 0 <= start < end <= len(blocks):
                raise ValueError(f"block range [{start}, {end}) is not inside the model's {len(blocks)} blocks")
        self.adapter = adapter
        self.blocks = list(blocks)
        self.ranges = [tuple(r) for r in ranges]
        self.decide = decide
        # (range index, branch) -> residual tensors at the last full steps; a skip adds their forecast
        self.deltas = deltas if deltas is not None else Forecast(0)
        self._first = min(start for start, _ in self.ranges)
        self._ctx = None  # the denoiser call in progress (its StepContext)
        self._pending: int | None = None  # the range this call skips, taken up when its first block runs
        self._skip: int | None = None  # the range being skipped in this call
        self._delta: tuple | None = None  # the residual its skip adds
        self._skip_state: tuple | None = None
        self._inputs: dict[int, tuple] = {}  # range index -> state entering it, this call
        self._measured: dict[int, tuple] = {}  # range index -> residual measured this call

    def install(self, hooks) -> None:
        last = max(end for _, end in self.ranges)
        for index in range(self._first, last):
            hooks.wrap(self.blocks[index], self._hook(index))

    def has_delta(self, range_index: int, branch: int) -> bool:
        return (range_index, branch) in self.deltas

    @property
    def skipping(self) -> bool:
        """Whether the call in progress skips a range."""
        return self._pending is not None

    def begin_call(self, ctx, skip: int | None = None) -> None:
        """A denoiser call starts; it skips range ``skip`` (None: runs every block, or asks ``decide``)."""
        self.end_call()
        self._ctx = ctx
        self._plan(skip)

    def keep(self, ctx) -> None:
        """After the call: store the residuals it measured, as of its step."""
        for index, residual in self._measured.items():
            self.deltas.put((index, ctx.branch), ctx.step, residual)
        self._measured = {}

    def end_call(self) -> None:
        self._ctx = self._pending = self._skip = self._delta = self._skip_state = None
        self._inputs, self._measured = {}, {}

    def clear(self) -> None:
        self.deltas.clear()
        self.end_call()

    def _plan(self, skip: int | None) -> None:
        branch = self._ctx.branch
        if skip is not None and (skip, branch) not in self.deltas:
            raise RuntimeError(f"asked to skip blocks {self.ranges[skip]} for CFG branch {branch}, "
                               "which has no residual for them yet")
        self._pending = skip
        # forecast here, outside a compiled graph: the hooks add a tensor, whatever the step
        self._delta = None if skip is None else self.deltas.get((skip, branch), self._ctx.step)

    @torch.compiler.disable
    def _decide_at_first_block(self, args: tuple, kwargs: dict) -> int | None:
        self._plan(self.decide(args, kwargs))
        return self._pending

    def _hook(self, index: int):
        # the block's roles, not its index: under torch.compile calls of blocks with the same roles share
        # compiled code (a model whose forward runs its blocks one by one compiles each block's call)
        first = index == self._first
        inside = tuple(r for r, (start, end) in enumerate(self.ranges) if start <= index < end)
        starting = tuple(r for r, (start, _) in enumerate(self.ranges) if start == index)
        ending = tuple(r for r, (_, end) in enumerate(self.ranges) if end - 1 == index)
        adapter = self.adapter
        block = self.blocks[index]

        def forward(original, *args, **kwargs):
            if first:
                # a call whose model leaves the first block out (SD3's skip_layers) skips nothing
                self._skip = self._decide_at_first_block(args, kwargs) if self.decide is not None else self._pending
            skip = self._skip
            if skip is not None and skip in inside:
                if skip in starting:
                    fresh = adapter.block_state(block, args, kwargs)
                    self._skip_state = tuple(_add(h, d) for h, d in zip(fresh, self._delta))
                return adapter.make_output(block, self._skip_state)
            if skip is None:
                for r in starting:
                    self._inputs[r] = adapter.block_state(block, args, kwargs)
            output = original(*args, **kwargs)
            if skip is None:
                for r in ending:
                    if r in self._inputs:
                        out_state = adapter.output_state(block, output)
                        self._measured[r] = tuple(_sub(o, i) for o, i in zip(out_state, self._inputs.pop(r)))
            return output

        return forward


# One elementwise op each, run eagerly: under torch.compile their inputs are views of the blocks' streams
# whose sizes, strides and storage offsets differ by stream (FLUX's text and image tokens split from one
# tensor), and each combination would be a recompile of a one-op graph that fuses with nothing
@torch.compiler.disable
def _add(h, d):
    return None if h is None or d is None else h + d


@torch.compiler.disable
def _sub(out, inp):
    return None if out is None or inp is None else out - inp
