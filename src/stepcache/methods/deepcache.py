"""DeepCache (arXiv 2312.00858): U-Nets reuse their deep features, recomputing only the shallow path.

A cache point (``branch`` = level m, ``layer`` = j) splits a U-Net in two. A cached step
runs the down path up to the j-th layer of level m (conv_in and every layer before it)
and, in the up path, only the layers that take those skip connections: the last j+1
layers of the up block at level m (it has one layer more than a down block) and every up
block above. Their input comes from the cache: the output of the up layer before them at
the last full step. ``layer`` = None (= the level's layer count) is the whole level: the
down block at level m runs without its downsampler, whose output only the deeper levels
read, and the feature cached is what enters the up block at level m (the output of the up
block one level deeper, or of the mid block at the deepest level). The DeepCache
package's ``cache_branch_id`` b is branch = b // 3, layer = b % 3 (it counts SD's two layers
and the downsampler of each level; its default b = 0 runs conv_in and the last layer of
the shallowest up block only). Its whole-level points still run the level's downsampler.

The deep path is skipped with forward wrappers, not a copy of the U-Net's forward: on a
cached step the deeper down blocks, the mid block and the up blocks below level m+1 hand
back zero-cost placeholders shaped like their real outputs (the U-Net only slices and
passes those on to the skipped up blocks), and the up block at level m+1 hands back the
cached feature.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from ..adapters import SKIP_LEVELS
from ..core.schedules import (
    deepcache_reference_full_steps,
    is_uniform_full_step,
    nonuniform_full_steps,
    resolve_step,
    uniform_full_steps,
)
from ..core.validate import check_choice, check_float, check_int, check_step
from . import register
from .base import CacheMethod, ReuseConfig

SCHEDULES = ("uniform", "non-uniform")

# what a wrapped block does in the current denoiser call
_OUTSIDE, _FULL, _CACHED = 0, 1, 2


@register
@dataclass(frozen=True)
class DeepCacheConfig(ReuseConfig):
    """DeepCache: 1 in N steps runs the whole U-Net, the others only the shallow path above skip level `branch`."""

    method: ClassVar[str] = "deepcache"
    requires: ClassVar[frozenset[str]] = frozenset({SKIP_LEVELS})
    default_grids: ClassVar[tuple] = ({"interval": [2, 3, 5]}, {"interval": [2, 3, 5], "layer": [0]},
                                      {"interval": [2, 3, 4, 5], "layer": [0], "order": [1], "warmup": [2]})

    interval: int = 3  # N: one full step in N (1 = never cache)
    branch: int = 0  # skip level whose shallow path keeps running; 0 = shallowest, cheapest cached step
    # "uniform": full when i % N == 0; "non-uniform": denser around `center` (convention="reference": the
    # DeepCache repository's own arithmetic, core.schedules.deepcache_reference_full_steps)
    schedule: str = "uniform"
    center: int | float = 0.3  # non-uniform only: step index, or fraction of the run
    power: float = 1.4  # non-uniform only: > 1; larger bunches full steps closer to `center`
    layer: int | None = None  # layer of level `branch` where the cached part starts; None = the whole level

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_int(owner, "interval", self.interval, 1)
        check_int(owner, "branch", self.branch, 0)
        check_choice(owner, "schedule", self.schedule, SCHEDULES)
        check_step(owner, "center", self.center)
        check_float(owner, "power", self.power, 1.0, low_open=True)
        if self.layer is not None:
            check_int(owner, "layer", self.layer, 0)

    def build(self, adapter, clock) -> "DeepCache":
        return DeepCache(self, adapter, clock)


class DeepCache(CacheMethod):
    """The hooks of one DeepCacheConfig on one U-Net, and its cached deep feature per CFG branch."""

    def __init__(self, config: DeepCacheConfig, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        levels = adapter.num_levels
        has_mid = adapter.mid_block is not None
        owner = type(config).__name__
        if config.branch > levels - 1:
            raise ValueError(f"{owner}.branch must be an integer in [0, {levels - 1}] for this U-Net "
                             f"({levels} skip levels), got {config.branch}")
        layers = len(adapter.down_block(config.branch).resnets)
        self.layer = layers if config.layer is None else config.layer
        if self.layer > layers:
            raise ValueError(f"{owner}.layer must be an integer in [0, {layers}] (or None: the whole level) for "
                             f"level {config.branch} of this U-Net ({layers} layers), got {config.layer}")
        if self.layer == layers and config.branch == levels - 1 and not has_mid:
            raise ValueError(f"{owner}: the whole deepest level of a U-Net without a mid block leaves nothing "
                             f"to cache; pick branch <= {levels - 2} or a layer < {layers}")
        self._features = self.new_forecast()  # CFG branch -> deep feature of its last full steps
        self._placeholders: dict[int, Any] = {}  # stand-in slot -> zero-cost output of the same structure
        self._mode = _OUTSIDE
        self._feature: Any = None  # the deep feature of the call in progress: the one reused, or the one computed
        self._is_full: Callable[[int], bool] | None = None  # set at the first call of a run
        self._planned: list[int] | None = None

    # -- hooks ----------------------------------------------------------------------------
    def install(self, hooks) -> None:
        stand_ins, source = self._split()
        for slot, module in enumerate(m for m in stand_ins if m is not None):
            hooks.wrap(module, functools.partial(self._stand_in, slot))
        hooks.wrap(source, self._feature_source)

    def _split(self) -> tuple[list, Any]:
        """(modules a cached step replaces by placeholders, the module whose output is cached)."""
        adapter, branch, layer = self.adapter, self.config.branch, self.layer
        deepest = adapter.num_levels - 1
        down = adapter.down_block(branch)
        # the level's own layers from `layer` on, and its downsampler: only the cached part reads them
        stand_ins = [*down.resnets[layer:], *(getattr(down, "attentions", None) or [])[layer:],
                     *(down.downsamplers or [])]
        stand_ins += [adapter.down_block(level) for level in range(branch + 1, deepest + 1)]
        up = adapter.up_block(branch)
        first_run = len(up.resnets) - 1 - layer  # the up block runs its layers from this one on
        if first_run == 0:  # the whole level: the cached feature enters the up block from below
            if branch < deepest:
                stand_ins.append(adapter.mid_block)
                stand_ins += [adapter.up_block(level) for level in range(branch + 2, deepest + 1)]
                return stand_ins, adapter.up_block(branch + 1)
            return stand_ins, adapter.mid_block
        stand_ins += [adapter.mid_block, *(adapter.up_block(level) for level in range(branch + 1, deepest + 1))]
        attentions = getattr(up, "attentions", None) or []
        stand_ins += [*up.resnets[: first_run - 1], *attentions[: first_run - 1]]
        if attentions:  # the up layer before the first that runs ends in its attention
            stand_ins.append(up.resnets[first_run - 1])
            return stand_ins, attentions[first_run - 1]
        return stand_ins, up.resnets[first_run - 1]

    def _stand_in(self, slot: int, forward, *args, **kwargs):
        if self._mode == _CACHED:
            return self._placeholders[slot]
        output = forward(*args, **kwargs)
        if slot not in self._placeholders:
            self._placeholders[slot] = _placeholder(output)
        return output

    def _feature_source(self, forward, *args, **kwargs):
        if self._mode == _CACHED:
            return self._feature
        output = forward(*args, **kwargs)
        if self._mode == _FULL:
            self._feature = output  # kept by after_call, outside a compiled graph
        return output

    # -- steps ----------------------------------------------------------------------------
    def before_call(self, ctx, args, kwargs):
        if self._is_full is None:
            self._is_full = self._plan(ctx.num_steps)
        # a branch that has no feature yet (first step) must compute one
        cached = ctx.branch in self._features and not self._is_full(ctx.step) \
            and not self.must_run_full(ctx.step, ctx.num_steps)
        if cached:
            self.mark_cached()
            # forecast here, outside a compiled graph: the hook returns a tensor, whatever the step
            self._feature = self._features.get(ctx.branch, ctx.step)
        self._mode = _CACHED if cached else _FULL
        return args, kwargs

    def after_call(self, ctx, output):
        if self._mode == _FULL and self._feature is not None:
            self._features.put(ctx.branch, ctx.step, self._feature)
        return output

    def call_ended(self, ctx) -> None:
        self._mode = _OUTSIDE
        self._feature = None

    def _plan(self, num_steps: int | None) -> Callable[[int], bool]:
        config = self.config
        if config.schedule == "uniform":
            self._planned = uniform_full_steps(num_steps, config.interval) if num_steps else None
            return functools.partial(is_uniform_full_step, interval=config.interval)
        if num_steps is None:
            raise RuntimeError(
                "DeepCache's non-uniform schedule needs the number of steps of the run: pass the sampling "
                "loop's scheduler to stepcache.apply(model, config, scheduler=...) or call handle.start_run(num_steps)"
            )
        center = resolve_step(config.center, num_steps, "center")
        schedule = deepcache_reference_full_steps if config.reference else nonuniform_full_steps
        self._planned = schedule(num_steps, config.interval, center, config.power)
        return frozenset(self._planned).__contains__

    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        self._is_full = None
        self._planned = None

    def clear(self) -> None:
        self._features.clear()
        self._placeholders.clear()

    def cache_tensors(self):
        return self._features.tensors()

    def extra_stats(self) -> dict:
        config = self.config
        return {
            "branch": config.branch,
            "layer": self.layer,
            "interval": config.interval,
            "schedule": config.schedule,
            "schedule_full_steps": self._planned,
        }


def _placeholder(output: Any) -> Any:
    """Zeros shaped like ``output`` (nested tuples of tensors), as views of one scalar: no memory, no compute."""
    if isinstance(output, torch.Tensor):
        return torch.zeros((), dtype=output.dtype, device=output.device).expand(output.shape)
    if isinstance(output, tuple):
        return tuple(_placeholder(item) for item in output)
    if output is None:
        return None
    raise TypeError(f"DeepCache cannot stand in for a U-Net block that returns {type(output).__name__}")
