"""Reuse-or-store hooks for a group of modules whose outputs a method caches (FORA, T-GATE).

A method points ``ReuseSlot.reuse`` at a container of stored outputs (index -> output) to
have every hooked module return its stored output without running, or ``store`` at a
container to fill while the modules run; both None runs them untouched. Set once per
denoiser call, so each hook costs two attribute reads.
"""

from __future__ import annotations

from typing import Any


class ReuseSlot:
    __slots__ = ("reuse", "store")

    def __init__(self) -> None:
        self.reuse: Any = None  # list or dict: module index -> output to return instead of running
        self.store: Any = None  # list or dict: module index -> output to record after running

    def reset(self) -> None:
        self.reuse = self.store = None

    def hook(self, index: int):
        """The forward wrapper of the ``index``-th module of the group."""

        def forward(original, *args, **kwargs):
            if self.reuse is not None:
                return self.reuse[index]
            output = original(*args, **kwargs)
            if self.store is not None:
                self.store[index] = output
            return output

        return forward
