"""The one entry point: ``apply(pipe_or_model, config) -> CacheHandle``, and ``cached(...)``."""

from __future__ import annotations

import contextlib
import copy
import functools
import weakref
from typing import Any, Iterator

from torch import nn

from .adapters import adapter_for
from .core.hooks import HookSet
from .core.pipeline import PipelineRuns
from .core.state import RunRecord, StepClock
from .methods.base import CacheConfig, tensor_bytes

# model -> its live handle; weak so a dropped model takes its entry with it
_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, CacheHandle]" = weakref.WeakKeyDictionary()


def find_denoiser(target: Any) -> tuple[nn.Module, Any]:
    """(denoiser model, pipeline or None) for a diffusers pipeline or a bare denoiser."""
    if isinstance(target, nn.Module):
        return target, None
    for name in ("transformer", "unet"):
        model = getattr(target, name, None)
        if isinstance(model, nn.Module):
            return model, target
    raise TypeError(
        f"expected a diffusers pipeline with a .transformer or .unet, or a denoiser model; "
        f"got {type(target).__name__}"
    )


def apply(target: Any, config: CacheConfig, *, scheduler: Any = None) -> "CacheHandle":
    """Install ``config``'s cache on a pipeline's denoiser (or on a denoiser model).

    Applied to a pipeline, every call of that pipeline is one run (core/state.py says how
    steps are counted). For a bare model in a hand-written loop, pass that loop's
    ``scheduler`` (or call ``handle.start_run``).
    Raises RuntimeError if the model already has a cache: remove that one first.
    """
    if not isinstance(config, CacheConfig):
        raise TypeError(f"config must be a stepcache config (e.g. FORAConfig(...)), got {type(config).__name__}")
    model, pipe = find_denoiser(target)
    if pipe is not None and scheduler is not None:
        raise ValueError("scheduler= is for a bare model in a hand-written loop; a pipeline's runs follow its "
                         "calls and the scheduler it uses")
    if getattr(model, "is_cache_enabled", False):
        raise RuntimeError(f"{type(model).__name__} has diffusers' own cache enabled; call "
                           "model.disable_cache() before applying stepcache (two caches would both skip work)")
    if model in _ACTIVE:
        raise RuntimeError(
            f"{type(model).__name__} already has a {_ACTIVE[model].config.method} cache applied; "
            "call remove() on its handle before applying another"
        )
    return CacheHandle(model, config, pipe, scheduler)


@contextlib.contextmanager
def cached(target: Any, config: CacheConfig, *, scheduler: Any = None) -> Iterator["CacheHandle"]:
    """``with cached(pipe, cfg) as handle:`` applies the cache and removes it on exit."""
    handle = apply(target, config, scheduler=scheduler)
    try:
        yield handle
    finally:
        handle.remove()


class CacheHandle:
    """A cache installed on one model: its statistics, and ``remove()`` to undo it exactly."""

    def __init__(self, model: nn.Module, config: CacheConfig, pipe: Any, scheduler: Any) -> None:
        self.model = model
        self.config = config
        self.adapter = adapter_for(model)
        self._hooks = HookSet()
        self.clock = StepClock(on_run_start=self._run_started, on_run_end=self._run_ended,
                               pipeline_name=None if pipe is None else type(pipe).__name__)
        self.method = config.build(self.adapter, self.clock)
        self._pipe, self._scheduler = pipe, scheduler
        self._install()
        self._removed = False
        self._peak_bytes = 0
        _ACTIVE[model] = self

    def _install(self) -> None:
        try:
            if self._pipe is not None:
                PipelineRuns(self._pipe, self.clock).install(self._hooks)
            elif self._scheduler is not None:
                self.clock.watch_scheduler(self._scheduler, self._hooks)
            self._hooks.wrap(self.model, self._denoiser_call)
            self.method.install(self._hooks)
            # a deep copy would share the wrappers, which call into this model: copy the unhooked object
            for obj in (self.model, self._pipe):
                if obj is not None:
                    self._hooks.set_attribute(obj, "__deepcopy__", functools.partial(self._copy_uncached, obj))
        except BaseException:
            self._hooks.remove()
            raise

    def _copy_uncached(self, obj: Any, memo: dict) -> Any:
        """``copy.deepcopy`` of the cached model or pipeline: an independent copy, without the cache."""
        self._hooks.remove()
        try:
            return copy.deepcopy(obj, memo)
        finally:
            self._install()

    def _denoiser_call(self, forward, *args, **kwargs):
        sample, timestep = self.adapter.sample_and_timestep(args, kwargs)
        ctx = self.clock.on_call(sample, timestep)
        try:
            output = self.method.model_call(ctx, forward, args, kwargs)
        finally:
            self.clock.end_call()
        # caches are freed when a run ends, so their size is taken while it runs
        self._peak_bytes = max(self._peak_bytes, tensor_bytes(self.method.cache_tensors()))
        return output

    def _run_started(self, record: RunRecord) -> None:
        if getattr(self.model, "is_cache_enabled", False):
            raise RuntimeError(f"{type(self.model).__name__} got diffusers' own cache (enable_cache) after "
                               "stepcache was applied; call model.disable_cache() or handle.remove()")
        self._peak_bytes = 0
        self.method.on_run_start(record)

    def _run_ended(self) -> None:
        self.method.on_run_end()

    def start_run(self, num_steps: int | None = None) -> None:
        """For hand-written loops without a scheduler: the next call starts a run of ``num_steps``."""
        self.clock.start_run(num_steps)

    def stats(self) -> dict:
        """Counts for the latest run, and the bytes the caches hold now."""
        record = self.clock.record
        full = record.full_step_indices() if record else []
        cached_steps = sorted(record.cached_steps) if record else []
        stats = {
            "method": self.config.method,
            "family": self.adapter.family,
            "runs": self.clock.runs,
            "num_steps": record.num_steps if record else None,
            "steps": record.steps_run if record else 0,
            "calls": record.calls if record else 0,
            "full_steps": len(full),
            "cached_steps": len(cached_steps),
            "full_step_indices": full,
            "cached_step_indices": cached_steps,
            "cache_bytes": tensor_bytes(self.method.cache_tensors()),
            "peak_cache_bytes": self._peak_bytes,  # the most the caches held after a denoiser call of the run
        }
        stats.update(self.method.extra_stats())
        return stats

    def remove(self) -> None:
        """Undo every hook and free every cache; the model behaves as if never touched."""
        if self._removed:
            return
        self._hooks.remove()
        self.method.clear()
        self._removed = True
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]

    def __enter__(self) -> "CacheHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
