"""A test-only method that hooks every block and sublayer without changing anything.

It records the StepContext of every denoiser call, so tests can check step counting,
and its hooks cover every place a real method hooks, so apply/remove exactness is
tested over the widest hook set.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepcache.methods.base import CacheConfig, CacheMethod


@dataclass(frozen=True)
class ProbeConfig(CacheConfig):
    method = "probe"
    requires = frozenset()  # any model: it hooks whatever blocks and sublayers the adapter lists

    def build(self, adapter, clock):
        return Probe(self, adapter, clock)


class Probe(CacheMethod):
    def __init__(self, config, adapter, clock):
        super().__init__(config, adapter, clock)
        self.calls = []  # (run, step, branch, num_steps, batch) per denoiser call
        self.starts = 0
        self.ends = 0

    def install(self, hooks):
        passthrough = lambda original, *args, **kwargs: original(*args, **kwargs)  # noqa: E731
        for block in self.adapter.blocks():
            hooks.wrap(block, passthrough)
            for modules in self.adapter.sublayers(block).values():
                for module in modules:
                    hooks.wrap(module, passthrough)

    def before_call(self, ctx, args, kwargs):
        sample, _ = self.adapter.sample_and_timestep(args, kwargs)
        self.calls.append((ctx.run, ctx.step, ctx.branch, ctx.num_steps, sample.shape[0]))
        return args, kwargs

    def on_run_start(self, record):
        self.starts += 1

    def on_run_end(self):
        self.ends += 1
