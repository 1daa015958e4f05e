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

from torch import nn

from .forecast import Forecast

BlockRange = tuple[int, int]  # [start, end) block indices
# decide(block_args, block_kwargs) -> index into ranges to skip this call, or None to run every block;
# only a range whose residual this call's branch has (``has_delta``) may be skipped
Decider = Callable[[tuple, dict], "int | None"]


class ResidualSkip:
    """Hooks over ``blocks`` that skip one of ``ranges`` per call, as ``decide`` says."""

    def __init__(self, adapter, blocks: Sequence[nn.Module], ranges: Sequence[BlockRange], decide: Decider,
                 clock, deltas: Forecast | None = None):
        for start, end in ranges:
            if not 0 <= start < end <= len(blocks):
                raise ValueError(f"block range [{start}, {end}) is not inside the model's {len(blocks)} blocks")
        self.adapter = adapter
        self.blocks = list(blocks)
        self.ranges = [tuple(r) for r in ranges]
        self.decide = decide
        self.clock = clock  # its ``current`` call says which CFG branch's residuals to use
        # (range index, branch) -> residual tensors at the last full steps; a skip adds their forecast
        self.deltas = deltas if deltas is not None else Forecast(0)
        self._first = min(start for start, _ in self.ranges)
        self._skip: int | None = None  # range being skipped in the current call
        self._call = None  # the denoiser call (its StepContext) the current decision belongs to
        self._branch = 0  # its CFG branch
        self._skip_state: tuple | None = None
        self._inputs: dict[int, tuple] = {}  # range index -> state entering it, this call

    def install(self, hooks) -> None:
        last = max(end for _, end in self.ranges)
        for index in range(self._first, last):
            hooks.wrap(self.blocks[index], self._hook(index))

    def has_delta(self, range_index: int, branch: int) -> bool:
        return (range_index, branch) in self.deltas

    def clear(self) -> None:
        self.deltas.clear()
        self._inputs.clear()
        self._skip_state = None
        self._call = self._skip = None

    def _hook(self, index: int):
        block = self.blocks[index]
        adapter = self.adapter
        starts = {r: start for r, (start, _) in enumerate(self.ranges)}
        ends = {r: end for r, (_, end) in enumerate(self.ranges)}

        def forward(original, *args, **kwargs):
            call = self.clock.current
            if index == self._first or call is not self._call:
                # a new denoiser call; one whose model left out the first block (SD3's skip_layers) runs all
                self._call, self._branch = call, call.branch
                self._skip = self.decide(args, kwargs) if index == self._first else None
                self._inputs.clear()
            skip = self._skip
            if skip is not None and (skip, self._branch) not in self.deltas:
                raise RuntimeError(f"asked to skip blocks {self.ranges[skip]} for CFG branch {self._branch}, "
                                   "which has no residual for them yet")
            if skip is not None and starts[skip] <= index < ends[skip]:
                if index == starts[skip]:
                    fresh = adapter.block_state(block, args, kwargs)
                    delta = self.deltas.get((skip, self._branch), call.step)
                    self._skip_state = tuple(_add(h, d) for h, d in zip(fresh, delta))
                return adapter.make_output(block, self._skip_state)
            if skip is None:
                for r, start in starts.items():
                    if start == index:
                        self._inputs[r] = adapter.block_state(block, args, kwargs)
            output = original(*args, **kwargs)
            if skip is None:
                for r, end in ends.items():
                    if end - 1 == index and r in self._inputs:
                        out_state = adapter.output_state(block, output)
                        self.deltas.put((r, self._branch), call.step, tuple(
                            _sub(o, i) for o, i in zip(out_state, self._inputs.pop(r))
                        ))
            return output

        return forward


def _add(h, d):
    return None if h is None or d is None else h + d


def _sub(out, inp):
    return None if out is None or inp is None else out - inp
