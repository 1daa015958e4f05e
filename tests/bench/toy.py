"""A minimal caching method for testing the harness before (and independently of) the real methods.

It reuses the whole denoiser output of the last full step, per CFG branch: crude, but it
changes images, MACs and cache bytes the way a real method does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from stepcache.core import validate
from stepcache.methods.base import CacheConfig, CacheMethod, Reply


@dataclass(frozen=True)
class ToyConfig(CacheConfig):
    """Reuse the whole output for interval - 1 steps after every full step (test-only)."""

    method: ClassVar[str] = "toy"
    requires: ClassVar[frozenset[str]] = frozenset()  # any model
    interval: int = 2
    scale: float = 1.0

    def __post_init__(self):
        validate.check_int("ToyConfig", "interval", self.interval, 1, 100)
        validate.check_float("ToyConfig", "scale", self.scale, 0.0, 10.0)

    def build(self, adapter, clock):
        return ToyMethod(self, adapter, clock)


class ToyMethod(CacheMethod):
    def install(self, hooks):
        self.outputs = {}

    def before_call(self, ctx, args, kwargs):
        if ctx.step % self.config.interval and ctx.branch in self.outputs:
            self.mark_cached()
            return Reply(self.outputs[ctx.branch])
        return args, kwargs

    def after_call(self, ctx, output):
        self.outputs[ctx.branch] = output
        return output

    def clear(self):
        self.outputs = {}

    def cache_tensors(self):
        return [o[0] if isinstance(o, tuple) else o.sample for o in self.outputs.values()]
