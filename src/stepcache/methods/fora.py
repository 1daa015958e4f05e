"""FORA (arXiv 2407.01425): reuse every block's attention and MLP outputs for N-1 steps.

Full steps are i % N == 0 (step 0 always full; under ``convention="reference"`` FORA's own
schedule, counted down from the last step: ``core.schedules.fora_reference_is_full``): every
cached sublayer runs and, when a later step will reuse it, its output is stored per CFG branch. On the N-1 steps after,
the sublayer modules are not run; their stored outputs come back instead, while the
block around them (norms, timestep modulation, gates, residual additions) still runs
on the current step. Sublayers are found through the adapter, so a module's own return
format (SD3/FLUX joint attention returns an (image, text) tuple) is reused as is.

In blocks whose sublayers are all cached, the adaLN-Zero layers (DiT, SD3, FLUX) compute
only their gates on reusing steps: the shifts and scales they would also compute modulate
inputs of sublayers that do not run (adapters/adaln.py). Under ``convention="reference"`` they
compute every chunk, as FORA's code does: a projection with a sliced weight may round
differently from the whole one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

from ..adapters import ADALN_GATES, DIT, SUBLAYER_ROLES, SUBLAYERS, adaln
from ..core import validate
from ..core.forecast import Forecast
from ..core.reuse import ReuseSlot
from ..core.schedules import check_interval, fora_reference_is_full, reuse_steps
from . import register
from .base import FORECAST_GRID, CacheMethod, ReuseConfig


@register
@dataclass(frozen=True)
class FORAConfig(ReuseConfig):
    """FORA: reuse each block's attention/MLP outputs on the N-1 steps after every full step.

    interval: N >= 1; full steps are i % N == 0, and N must fit the run (1..T-1, or 1).
        Under convention="reference" FORA's own schedule: step 0 and every step T-1-i with
        i % N == 0 (so the last step is full), for any N.
    sublayers: roles to cache, from ("attn", "cross_attn", "ff"); None (default) caches
        every role the model's blocks have. Roles given explicitly must exist in the
        model (e.g. "cross_attn" on DiT, whose blocks have none, is an error).
    """

    method: ClassVar[str] = "fora"
    requires: ClassVar[frozenset[str]] = frozenset({DIT, SUBLAYERS})  # and ADALN_GATES where offered
    default_grids: ClassVar[tuple] = ({"interval": [2, 3, 5]}, {"interval": [2], "order": [1]},
                                      {"interval": [2, 3, 4], **FORECAST_GRID})

    interval: int = 3
    sublayers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        validate.check_int("FORAConfig", "interval", self.interval, 1)
        if self.sublayers is not None:
            roles = self.sublayers
            allowed = "a non-empty tuple of distinct roles from " + ", ".join(map(repr, SUBLAYER_ROLES))
            if isinstance(roles, str) or not isinstance(roles, (tuple, list)) or not roles:
                raise ValueError(f"FORAConfig.sublayers must be {allowed}, got {roles!r}")
            if len(set(roles)) != len(roles) or not set(roles) <= set(SUBLAYER_ROLES):
                raise ValueError(f"FORAConfig.sublayers must be {allowed}, got {roles!r}")
            object.__setattr__(self, "sublayers", tuple(roles))  # a list would make the config unhashable

    def build(self, adapter, clock) -> "FORA":
        return FORA(self, adapter, clock)


class FORA(CacheMethod):
    """Hooks on every cached sublayer module; per CFG branch, module index -> its last output."""

    def __init__(self, config: FORAConfig, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        blocks = adapter.blocks()
        present = {role for block in blocks for role in adapter.sublayers(block)}
        roles = config.sublayers or tuple(r for r in SUBLAYER_ROLES if r in present)
        missing = [role for role in roles if role not in present]
        if missing:
            raise ValueError(
                f"FORAConfig.sublayers has {', '.join(map(repr, missing))}, which no block of this "
                f"{type(adapter.model).__name__} has; allowed here: {', '.join(map(repr, sorted(present)))}"
            )
        self.roles = roles
        self.blocks = blocks
        self.modules = [m for block in blocks for role, ms in adapter.sublayers(block).items() if role in roles
                        for m in ms]
        # under the reference convention the adaLN layers compute every chunk, as FORA's code does
        self.modulations = [] if config.reference or ADALN_GATES not in adapter.offers else [
            m for block in blocks if set(adapter.sublayers(block)) <= set(roles) for m in adapter.gate_modulations(block)]
        self._caches: dict[int, Forecast] = {}  # branch -> module index -> its outputs at the last full steps
        self._slot = ReuseSlot(self.modules)  # set once per denoiser call, read by every sublayer hook

    def install(self, hooks) -> None:
        self._slot.install(hooks)
        for module in self.modulations:
            hooks.wrap(module, self._gates_only_on_reuse(module))

    def _gates_only_on_reuse(self, module):
        def forward(original, *args, **kwargs):
            if not self._slot.reusing:
                return original(*args, **kwargs)
            return adaln.gates_only(module, args, kwargs)

        return forward

    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        if self.config.reference and record.num_steps is None:
            raise RuntimeError("FORAConfig(convention='reference') counts steps from the end of the run: pass "
                               "scheduler= to stepcache.apply() or call handle.start_run(num_steps) before the loop")
        if record.num_steps is not None and not self.config.reference:
            check_interval(self.config.interval, record.num_steps, "FORAConfig.interval")
        if "ff" in self.roles and any(getattr(b, "_chunk_size", None) is not None for b in self.blocks):
            # chunked feed-forward calls the MLP once per chunk: one stored output cannot stand for them
            raise RuntimeError("FORA cannot cache a chunked feed-forward; call disable_forward_chunking() first")

    def _is_full(self, step: int, num_steps: int | None) -> bool:
        if self.config.reference:
            return fora_reference_is_full(step, num_steps, self.config.interval)
        return step % self.config.interval == 0

    def _reused_later(self, step: int, num_steps: int | None) -> bool:
        """Whether a step after this full one, before the next full one, reuses what it computes."""
        if num_steps is None:  # unknown length: the whole interval is assumed
            later = reuse_steps(step, self.config.interval, None)
        else:
            later = itertools.takewhile(lambda s: not self._is_full(s, num_steps), range(step + 1, num_steps))
        return any(not self.must_run_full(s, num_steps) for s in later)

    def before_call(self, ctx, args, kwargs):
        # a branch first seen on a reusing step (a guidance pass that runs only on some steps) runs in full
        if not self._is_full(ctx.step, ctx.num_steps) and ctx.branch in self._caches \
                and not self.must_run_full(ctx.step, ctx.num_steps):
            cache = self._caches[ctx.branch]
            # predicted here, outside a compiled graph: the hooks read tensors, never the step
            self._slot.reuse({index: cache.get(index, ctx.step) for index in cache.keys()})
            self.mark_cached()
        # plain reuse keeps a full step's outputs only if a step before the next full one reuses them;
        # a forecast keeps every full step's, as the nodes of its polynomial
        elif self.config.order or self._reused_later(ctx.step, ctx.num_steps):
            self._slot.store()
        else:
            self._caches.pop(ctx.branch, None)  # nothing after this step reuses it
        return args, kwargs

    def after_call(self, ctx, output):
        stored = self._slot.stored() if self._slot.storing else None
        if stored:
            cache = self._caches.setdefault(ctx.branch, self.new_forecast())
            for index, value in stored.items():
                cache.put(index, ctx.step, value)
        return output

    def call_ended(self, ctx) -> None:
        self._slot.reset()

    def clear(self) -> None:
        self._caches.clear()
        self._slot.reset()

    def cache_tensors(self):
        return [cache.tensors() for cache in self._caches.values()]

    def extra_stats(self) -> dict:
        return {
            "sublayers": list(self.roles),
            "cached_modules": len(self.modules),
            "gate_only_modulations": len(self.modulations),
        }
