"""The one entry point: ``apply(pipe_or_model, config) -> CacheHandle``, and ``cached(...)``."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import re
import weakref
from typing import Any, Iterator

import torch
from torch import nn
from torch._dynamo.eval_frame import OptimizedModule

from .adapters import adapter_for
from .core import distributed
from .core.hooks import HookSet
from .core.pipeline import PipelineRuns
from .core.state import RunRecord, StepClock
from .methods.base import CacheConfig, Reply, tensor_bytes

# model -> its live handle; weak so a dropped model takes its entry with it
_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, CacheHandle]" = weakref.WeakKeyDictionary()


# pipeline components that are denoisers: transformer, transformer_2 (Wan 2.2's low-noise stage), unet,
# unet_2, prior (Stable Cascade, Kandinsky); numbered ones after the plain one
_DENOISER_NAME = re.compile(r"(transformer|unet|prior)(?:_(\d+))?")
_DENOISER_KINDS = ("transformer", "unet", "prior")


def find_denoisers(target: Any) -> tuple[list[tuple[str, nn.Module]], Any]:
    """([(component name, denoiser model), ...], pipeline or None) for a diffusers pipeline or a bare denoiser.

    A pipeline's denoisers are its components named transformer, unet or prior, optionally numbered
    (``transformer_2``), that are set; the plain name comes first. A bare model is its own one denoiser.
    """
    if isinstance(target, nn.Module):
        return [("", _uncompiled(target))], None
    components = getattr(target, "components", None)
    if not isinstance(components, dict):
        components = {name: getattr(target, name, None) for name in _DENOISER_KINDS}
    found = []
    for name, model in components.items():
        match = _DENOISER_NAME.fullmatch(name)
        if match and isinstance(model, nn.Module):
            found.append(((_DENOISER_KINDS.index(match[1]), int(match[2] or 0)), name, _uncompiled(model)))
    if not found:
        raise TypeError(
            f"expected a diffusers pipeline with a .transformer or .unet (or another denoiser component), or a "
            f"denoiser model; got {type(target).__name__}"
        )
    return [(name, model) for _, name, model in sorted(found, key=lambda item: item[0])], target


_OFFLOAD_REASON = ("the pipeline takes accelerate's hooks off and puts them back after every call, which drops "
                   "stepcache's, so stepcache does not run under them. Diffusers' group offloading "
                   "(model.enable_group_offload) and layerwise casting work with every method")


def _accelerate_offload(model: nn.Module) -> str | None:
    """Which of accelerate's offloading modes a pipeline put on ``model``, or None.

    Model offloading hooks the denoiser itself with a CpuOffload hook, sequential offloading
    every module with weights with an offloading AlignDevicesHook. Other accelerate hooks
    (a model dispatched over devices by ``device_map``) stay put and are not refused.
    """
    if any(type(hook).__name__ == "CpuOffload" for hook in _accelerate_hooks(model)):
        return "model CPU offloading (pipe.enable_model_cpu_offload())"
    if any(getattr(hook, "offload", False) for m in model.modules() for hook in _accelerate_hooks(m)):
        return "sequential CPU offloading (pipe.enable_sequential_cpu_offload())"
    return None


def _accelerate_hooks(module: nn.Module) -> tuple:
    hook = getattr(module, "_hf_hook", None)
    return () if hook is None else tuple(getattr(hook, "hooks", (hook,)))  # a SequentialHook holds several


def _uncompiled(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile(model)``'s wrapper (which calls the model's ``__call__``, so the cache
    installed on the model runs inside it), or the model itself."""
    return model._orig_mod if isinstance(model, OptimizedModule) else model


def find_denoiser(target: Any) -> tuple[nn.Module, Any]:
    """(the first denoiser model, pipeline or None) for a diffusers pipeline or a bare denoiser."""
    denoisers, pipe = find_denoisers(target)
    return denoisers[0][1], pipe


def apply(target: Any, config: "CacheConfig | str | os.PathLike", *, scheduler: Any = None,
          group: Any = distributed.AUTO) -> "CacheHandle":
    """Install ``config``'s cache on a pipeline's denoiser (or on a denoiser model).

    Applied to a pipeline, every call of that pipeline is one run (core/state.py says how
    steps are counted). For a bare model in a hand-written loop, pass that loop's
    ``scheduler`` (or call ``handle.start_run``).
    Raises RuntimeError if the model already has a cache: remove that one first.

    Several ranks sharing one image (sequence parallelism): adaptive methods reduce their
    statistic over ``group``, the ranks that each hold a part of the image's tokens. Left
    out, it is read from a model sharded with diffusers' ``enable_parallelism`` (call that
    first, then ``apply``), and a model without it is not sharded; pass another engine's
    process group, or None if every rank holds whole activations (core/distributed.py).
    """
    if isinstance(config, (str, os.PathLike)):  # a config file, e.g. the one `stepcache tune` writes
        from .config_files import load_config

        config = load_config(config)
    if not isinstance(config, CacheConfig):
        raise TypeError("config must be a stepcache config (e.g. FORAConfig(...)) or the path of a config file, "
                        f"got {type(config).__name__}")
    denoisers, pipe = find_denoisers(target)
    if pipe is not None and scheduler is not None:
        raise ValueError("scheduler= is for a bare model in a hand-written loop; a pipeline's runs follow its "
                         "calls and the scheduler it uses")
    for _, model in denoisers:
        if getattr(model, "is_cache_enabled", False):
            raise RuntimeError(f"{type(model).__name__} has diffusers' own cache enabled; call "
                               "model.disable_cache() before applying stepcache (two caches would both skip work)")
        if (offload := _accelerate_offload(model)) is not None:
            raise RuntimeError(f"{type(model).__name__} has {offload}: {_OFFLOAD_REASON}; call "
                               "pipe.remove_all_hooks() first")
        if model in _ACTIVE:
            raise RuntimeError(
                f"{type(model).__name__} already has a {_ACTIVE[model].config.method} cache applied; "
                "call remove() on its handle before applying another"
            )
    return CacheHandle(denoisers, config, pipe, scheduler, group)


@contextlib.contextmanager
def cached(target: Any, config: CacheConfig, *, scheduler: Any = None,
           group: Any = distributed.AUTO) -> Iterator["CacheHandle"]:
    """``with cached(pipe, cfg) as handle:`` applies the cache and removes it on exit."""
    handle = apply(target, config, scheduler=scheduler, group=group)
    try:
        yield handle
    finally:
        handle.remove()


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """One cached model of a handle: its pipeline component name ("" for a bare model), adapter and method."""

    name: str
    model: nn.Module
    adapter: Any
    method: Any


class CacheHandle:
    """A cache installed on a pipeline's denoisers (or one model): statistics, and ``remove()`` to undo it exactly.

    A pipeline with several denoisers (Wan 2.2: ``transformer`` for the high-noise steps, ``transformer_2`` for
    the low-noise ones) gets one method instance per denoiser, each with its own caches, on one step clock.
    ``model``, ``adapter`` and ``method`` are the first denoiser's; ``denoisers`` lists them all.
    """

    def __init__(self, denoisers: list[tuple[str, nn.Module]], config: CacheConfig, pipe: Any,
                 scheduler: Any, group: Any = distributed.AUTO) -> None:
        self.config = config
        self._hooks = HookSet()
        self.clock = StepClock(on_run_start=self._run_started, on_run_end=self._run_ended,
                               pipeline_name=None if pipe is None else type(pipe).__name__)
        adapters = [(name, model, adapter_for(model)) for name, model in denoisers]  # all found before any build
        self.denoisers = [Denoiser(name, model, adapter, config.build(adapter, self.clock))
                          for name, model, adapter in adapters]
        self.model, self.adapter, self.method = self.denoisers[0].model, self.denoisers[0].adapter, \
            self.denoisers[0].method
        for denoiser in self.denoisers:  # the ranks an adaptive method reduces over (core/distributed.py)
            sharding = distributed.resolve(denoiser.model, group)
            if denoiser.method.adaptive:
                sharding.check_adaptive(type(config).__name__)
            denoiser.method.sharding = sharding
        # enable_parallelism after apply would wrap the model around stepcache's wrapper: refused at the next run
        self._parallel_configs = [distributed.parallel_config(d.model) for d in self.denoisers]
        self._pipe, self._scheduler = pipe, scheduler
        self._install()
        self._removed = False
        self._peak_bytes = 0
        for denoiser in self.denoisers:
            _ACTIVE[denoiser.model] = self

    def _install(self) -> None:
        try:
            if self._pipe is not None:
                PipelineRuns(self._pipe, self.clock).install(self._hooks)
            elif self._scheduler is not None:
                self.clock.watch_scheduler(self._scheduler, self._hooks)
            for denoiser in self.denoisers:
                self._hooks.wrap(denoiser.model, functools.partial(self._denoiser_call, denoiser))
                denoiser.method.install(self._hooks)
            # a deep copy would share the wrappers, which call into this model: copy the unhooked object
            for obj in (*(d.model for d in self.denoisers), self._pipe):
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

    # Under torch.compile this frame runs in Python and only ``forward`` is compiled, as a frame of its own:
    # the step counting and the method's decisions run outside the graph, so dynamo never guards on them.
    # Everything else it calls is disabled for dynamo, which would otherwise compile each as a frame too.
    @torch.compiler.disable(recursive=False)
    def _denoiser_call(self, denoiser: Denoiser, forward, *args, **kwargs):
        ctx, call = self._begin_call(denoiser, args, kwargs)
        try:
            output = call.output if isinstance(call, Reply) else forward(*call[0], **call[1])
            return self._finish_call(denoiser, ctx, output)
        finally:
            self._end_call(denoiser, ctx)

    @torch.compiler.disable
    def _begin_call(self, denoiser: Denoiser, args: tuple, kwargs: dict):
        sample, timestep = denoiser.adapter.sample_and_timestep(args, kwargs)
        ctx = self.clock.on_call(sample, timestep)
        try:
            return ctx, denoiser.method.before_call(ctx, args, kwargs)
        except BaseException:
            self._end_call(denoiser, ctx)
            raise

    @torch.compiler.disable
    def _finish_call(self, denoiser: Denoiser, ctx, output):
        output = denoiser.method.after_call(ctx, output)
        # caches are freed when a run ends, so their size is taken while it runs
        self._peak_bytes = max(self._peak_bytes, self._cache_bytes())
        return output

    @torch.compiler.disable
    def _end_call(self, denoiser: Denoiser, ctx) -> None:
        denoiser.method.call_ended(ctx)
        self.clock.end_call()

    def cache_tensors(self) -> list:
        """What every denoiser's cache holds now (``stats()['cache_bytes']`` counts these tensors)."""
        return [value for d in self.denoisers for value in d.method.cache_tensors()]

    def _cache_bytes(self) -> int:
        return tensor_bytes(self.cache_tensors())

    def _run_started(self, record: RunRecord) -> None:
        for denoiser in self.denoisers:
            if getattr(denoiser.model, "is_cache_enabled", False):
                raise RuntimeError(f"{type(denoiser.model).__name__} got diffusers' own cache (enable_cache) after "
                                   "stepcache was applied; call model.disable_cache() or handle.remove()")
            if (offload := _accelerate_offload(denoiser.model)) is not None:
                raise RuntimeError(f"{type(denoiser.model).__name__} got {offload} after stepcache was applied: "
                                   f"{_OFFLOAD_REASON}; call pipe.remove_all_hooks() or handle.remove()")
        for denoiser, seen in zip(self.denoisers, self._parallel_configs):
            if distributed.parallel_config(denoiser.model) is not seen:
                raise RuntimeError(f"{type(denoiser.model).__name__} was sharded (enable_parallelism) after stepcache "
                                   "was applied, so stepcache sees one rank's part of the tokens; call handle.remove(), "
                                   "then stepcache.apply again: enable_parallelism first, then apply")
        self._peak_bytes = 0
        for denoiser in self.denoisers:
            denoiser.method.on_run_start(record)

    def _run_ended(self) -> None:
        for denoiser in self.denoisers:
            denoiser.method.on_run_end()

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
            "cache_bytes": self._cache_bytes(),  # of every denoiser's caches
            "peak_cache_bytes": self._peak_bytes,  # the most the caches held after a denoiser call of the run
        }
        stats.update(self.method.extra_stats())
        if len(self.denoisers) > 1:  # each denoiser's own figures; the step counts above are the pipeline's
            stats["denoisers"] = {
                d.name: {"class": type(d.model).__name__, "family": d.adapter.family,
                         "cache_bytes": tensor_bytes(d.method.cache_tensors()), **d.method.extra_stats()}
                for d in self.denoisers}
        return stats

    def remove(self) -> None:
        """Undo every hook and free every cache; the model behaves as if never touched."""
        if self._removed:
            return
        self._hooks.remove()
        for denoiser in self.denoisers:
            denoiser.method.clear()
            if _ACTIVE.get(denoiser.model) is self:
                del _ACTIVE[denoiser.model]
        self._removed = True

    def __enter__(self) -> "CacheHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
