"""Other libraries' caches ("peers") as bench rows, on the same pipeline, sampler and seeds as stepcache's.

``stepcache bench --peers`` (``bench.run(..., peers=peer_configs(sampler))``) measures, next to
stepcache's configs and the fewer-steps baseline:

* diffusers' own caches through ``model.enable_cache(config)`` / ``model.disable_cache()``:
  FirstBlockCache, TaylorSeerCache, MagCache (calibrated first on the same pipeline: one
  uncached run with ``MagCacheConfig(calibrate=True)`` gives the magnitude ratios),
  FasterCache and PyramidAttentionBroadcast. In diffusers 0.42.1 the DiT, PixArt and U-Net
  models do not inherit ``CacheMixin``; for them it is mixed into the model's class while
  the peer is applied, so the same ``enable_cache`` / ``disable_cache`` code runs;
* cache-dit's DBCache (with its TaylorSeer calibrator) and the DeepCache package's
  ``DeepCacheSDHelper``, when installed (``pip install 'stepcache[peers]'``).

diffusers' hooks need what diffusers' pipelines give them and the zoo pipelines do not: a
cache context around each denoiser call, the current timestep (FasterCache, PAB) and a reset
at the start of every pipeline call. ``PeerHandle`` supplies them from the scheduler
(``set_timesteps`` starts a run, ``step`` ends a step) and the denoiser's own arguments.
A peer that does not apply to a model gives a ``peer_not_run`` record saying why. Removing
a peer undoes it, and whatever the library leaves behind on the denoiser's modules or the
pipeline (instance ``forward`` attributes, empty hook registries, patched attributes) is put
back as it was, so the next run is bit-identical to the untouched pipeline; the record lists
what had to be put back.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import io
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..api import find_denoiser
from ..core.hooks import HookSet

# What `stepcache bench --peers` sweeps, per peer: field -> values (the product is the grid).
# TaylorSeer, DBCache and DeepCache follow issue #16; the others span each method's documented
# default to more aggressive settings.
# the blocks' self-attention and MLP: DiT/PixArt name them transformer_blocks.N.attn1/ff, Wan blocks.N.attn1/ffn
_TAYLORSEER_BLOCKS = r"(transformer_)?blocks\.\d+\.(attn1|ffn?)"
PEER_GRIDS: dict[str, dict[str, list[Any]]] = {
    "diffusers.FirstBlockCache": {"threshold": [0.05, 0.1, 0.2]},
    "diffusers.TaylorSeerCache": {
        "cache_interval": [2, 3, 5], "max_order": [1, 2], "disable_cache_before_step": [3],
        "taylor_factors_dtype": ["float32"], "cache_identifiers": [(_TAYLORSEER_BLOCKS,)],
    },
    "diffusers.MagCache": {"threshold": [0.06, 0.12, 0.24], "max_skip_steps": [3], "retention_ratio": [0.2]},
    "diffusers.FasterCache": {"spatial_attention_block_skip_range": [2, 3], "unconditional_batch_skip_range": [5]},
    "diffusers.PyramidAttentionBroadcast": {"spatial_attention_block_skip_range": [2, 3, 5],
                                            "cross_attention_block_skip_range": [6]},
    "cache-dit.DBCache": {"Fn_compute_blocks": [1], "Bn_compute_blocks": [0], "max_warmup_steps": [4],
                          "residual_diff_threshold": [0.16, 0.3, 0.5], "taylorseer_order": [1]},
    "DeepCache.DeepCacheSDHelper": {"cache_interval": [2, 3, 5], "cache_branch_id": [0], "skip_mode": ["uniform"]},
}
CALIBRATION_SEED_OFFSET = 1  # MagCache calibrates on seed + 1: not the measured images, not the distribution sets


@dataclass(frozen=True)
class PeerConfig:
    """One setting of one peer: ``peer`` names it (a key of ``PEERS``), ``settings`` are its fields."""

    peer: str
    settings: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.peer not in PEERS:
            raise ValueError(f"unknown peer {self.peer!r}; known peers: {', '.join(PEERS)}")

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def label(self) -> str:
        package, method = self.peer.split(".", 1)
        return " ".join([package, method, *(f"{k}={_text(v)}" for k, v in self.settings)])

    def as_record(self) -> dict:
        peer = PEERS[self.peer]
        return {"peer": self.peer, "package": peer.package, "version": peer.version(),
                "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings}}


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def peer_configs(names: Iterable[str] | None = None, grids: dict[str, dict[str, list]] | None = None
                 ) -> list[PeerConfig]:
    """Every config of the peers ``names`` (None: all) over ``grids`` (default ``PEER_GRIDS``)."""
    grids = PEER_GRIDS if grids is None else grids
    names = list(PEERS) if names is None else list(names)
    configs = []
    for name in names:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; known peers: {', '.join(PEERS)}")
        grid = grids.get(name, {})
        for combo in itertools.product(*grid.values()):
            configs.append(PeerConfig(name, tuple(zip(grid, combo))))
    return configs


class NotApplicable(Exception):
    """The peer cannot run on this model or pipeline; the message says why."""


class Peer:
    """How one library's cache is installed on a sampler's pipeline and taken off again."""

    package = ""  # distribution name, for the version
    needs_context = False  # wants diffusers' cache context around each denoiser call

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def check(self, model: nn.Module, pipe: Any, sampler: Any) -> None:
        """Raise NotApplicable before anything is installed, where the reason is known up front."""

    def prepare(self, attach: Callable[[PeerConfig], "PeerHandle"], sampler: Any, config: PeerConfig, steps: int,
                seed: int) -> dict:
        """Work done once before the measured runs (MagCache's calibration); its result goes in the record."""
        return {}

    def install(self, handle: "PeerHandle", config: PeerConfig, prepared: dict) -> Callable[[], None]:
        """Install on ``handle.model`` / ``handle.pipe``; return the library's own removal."""
        raise NotImplementedError

    def held(self, handle: "PeerHandle") -> list:
        """Objects that hold the cache's tensors (walked for the cache bytes)."""
        return []

    def on_run_start(self, handle: "PeerHandle") -> None:
        """Called when the pipeline starts a run (``scheduler.set_timesteps``)."""


# ---------------------------------------------------------------------------------------------
# diffusers


def _diffusers_registries(model: nn.Module) -> list[tuple[str, Any]]:
    return [(name, m.__dict__["_diffusers_hook"]) for name, m in model.named_modules()
            if "_diffusers_hook" in m.__dict__ and m.__dict__["_diffusers_hook"].hooks]


def _block_lists(model: nn.Module) -> list[str]:
    """The top-level ModuleLists FirstBlockCache and MagCache hook (diffusers' own selection)."""
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    return [name for name, child in model.named_children()
            if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, nn.ModuleList) and len(child)]


class DiffusersPeer(Peer):
    package = "diffusers"
    needs_context = True
    config_class = ""
    needs_blocks = False  # FirstBlockCache and MagCache: hooks on the top-level transformer block list

    def check(self, model, pipe, sampler):
        if self.needs_blocks and not _block_lists(model):
            raise NotApplicable(f"{self.config_class} hooks a top-level transformer block list (transformer_blocks, "
                                f"blocks, layers, ...); {type(model).__name__} has none")

    def config(self, handle: "PeerHandle", values: dict, prepared: dict):
        import diffusers.hooks

        return getattr(diffusers.hooks, self.config_class)(**values)

    def install(self, handle, config, prepared):
        model = handle.model
        undo_mixin = _mix_in_cache_mixin(model)
        try:
            model.enable_cache(self.config(handle, config.values, prepared))
        except BaseException:
            undo_mixin()
            raise
        hooked = [name or "(model)" for name, _ in _diffusers_registries(model)]
        handle.info["hooked_modules"] = hooked
        if not hooked or hooked == ["(model)"] and self.config_class != "FasterCacheConfig":
            model.disable_cache()
            undo_mixin()
            attention = next((name for name, m in model.named_modules() if name.endswith("attn1")), None)
            example = f"; its self-attention is e.g. {attention}" if attention else ""
            raise NotApplicable(f"{self.config_class} hooks no module of {type(model).__name__} with these settings "
                                f"(diffusers selects modules by name from the model root{example})")

        def remove():
            model.disable_cache()
            undo_mixin()

        return remove

    def on_run_start(self, handle: "PeerHandle") -> None:
        handle.model._reset_stateful_cache()

    def held(self, handle):
        return [registry.hooks for _, registry in _diffusers_registries(handle.model)]


def _mix_in_cache_mixin(model: nn.Module) -> Callable[[], None]:
    """Give ``model`` diffusers' CacheMixin (enable_cache, disable_cache, cache_context) if its class lacks it."""
    from diffusers.models.cache_utils import CacheMixin

    cls = type(model)
    if isinstance(model, CacheMixin):
        return lambda: None
    model.__class__ = type(cls.__name__, (cls, CacheMixin),
                           {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})

    def undo() -> None:
        model.__class__ = cls

    return undo


class FirstBlockCachePeer(DiffusersPeer):
    config_class = "FirstBlockCacheConfig"
    needs_blocks = True


class TaylorSeerPeer(DiffusersPeer):
    config_class = "TaylorSeerCacheConfig"

    def config(self, handle, values, prepared):
        values = dict(values)
        if isinstance(values.get("taylor_factors_dtype"), str):
            values["taylor_factors_dtype"] = getattr(torch, values["taylor_factors_dtype"])
        for key in ("cache_identifiers", "skip_predict_identifiers"):
            if values.get(key) is not None:
                values[key] = list(values[key])
        return super().config(handle, values, prepared)


class MagCachePeer(DiffusersPeer):
    config_class = "MagCacheConfig"
    needs_blocks = True

    def prepare(self, attach, sampler, config, steps, seed):
        """One uncached run with ``MagCacheConfig(calibrate=True)``: the per-step magnitude ratios of this pipeline."""
        handle = attach(PeerConfig(config.peer, (("calibrate", True), ("num_inference_steps", steps))))
        ratios: list[float] = []
        try:
            tail = [hook for _, registry in _diffusers_registries(handle.model) for hook in registry.hooks.values()
                    if getattr(hook, "is_tail", False)]
            calibrate = tail[0]._perform_calibration_step

            def record(state, residual):  # the hook forgets its ratios when the run ends: keep a copy
                calibrate(state, residual)
                ratios[:] = state.calibration_ratios

            tail[0]._perform_calibration_step = record
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the ratios
                sampler.sample(steps, seed + CALIBRATION_SEED_OFFSET)
        finally:
            handle.remove()
        if len(ratios) != steps:
            raise NotApplicable(f"MagCache calibration recorded {len(ratios)} ratios for {steps} steps")
        return {"calibration": {"seed": seed + CALIBRATION_SEED_OFFSET, "steps": steps, "mag_ratios": ratios}}

    def config(self, handle, values, prepared):
        if not values.get("calibrate"):
            calibration = prepared["calibration"]
            values = {**values, "mag_ratios": calibration["mag_ratios"], "num_inference_steps": calibration["steps"]}
        return super().config(handle, values, prepared)


def _current_timestep(handle: "PeerHandle") -> Callable[[], float]:
    return lambda: handle.loop.timestep


class FasterCachePeer(DiffusersPeer):
    config_class = "FasterCacheConfig"

    def check(self, model, pipe, sampler):
        cfg = getattr(sampler, "cfg", None)
        if cfg is not None and cfg != "batched":
            raise NotApplicable(f"FasterCache splits one batched [uncond, cond] denoiser call; this sampler runs "
                                f"{cfg} CFG")

    def config(self, handle, values, prepared):
        from diffusers.hooks.faster_cache import _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS

        values = {
            "current_timestep_callback": _current_timestep(handle),
            "tensor_format": "BCHW",  # images, not video
            # DiT takes its class labels batched [uncond, cond] too
            "_unconditional_conditional_input_kwargs_identifiers": [*_UNCOND_COND_INPUT_KWARGS_IDENTIFIERS,
                                                                    "class_labels"],
            **values,
        }
        return super().config(handle, values, prepared)

    def install(self, handle, config, prepared):
        with _quiet("diffusers.hooks.faster_cache"):  # "experimental", "no attention_weight_callback: 0.5"
            remove = super().install(handle, config, prepared)
        if handle.info["hooked_modules"] == ["(model)"]:
            handle.info["notes"].append(
                "no attention layer hooked (FasterCache's attention identifiers are anchored at the model root: "
                "^transformer_blocks...); only its unconditional-branch skipping runs")
        return remove


class PyramidAttentionBroadcastPeer(DiffusersPeer):
    config_class = "PyramidAttentionBroadcastConfig"

    def config(self, handle, values, prepared):
        return super().config(handle, {"current_timestep_callback": _current_timestep(handle), **values}, prepared)


@contextlib.contextmanager
def _quiet(prefix: str):
    """Only errors from the loggers named ``prefix...`` inside (FasterCache's "experimental" warnings, cache-dit's
    progress messages)."""
    import logging

    loggers = [logging.getLogger(prefix)] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                                             if name.startswith(prefix + ".")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# cache-dit


class CacheDiTPeer(Peer):
    """cache-dit's DBCache; ``taylorseer_order`` > 0 adds its TaylorSeer calibrator of that order."""

    package = "cache-dit"

    def check(self, model, pipe, sampler):
        if pipe is None:
            raise NotApplicable("cache-dit resets its cache context per pipeline call; this target is a bare model")
        if not _block_lists(model):
            raise NotApplicable(f"DBCache caches a transformer block stack; {type(model).__name__} has none")
        self._adapter_factory(model, pipe)

    @staticmethod
    def _adapter_factory(model, pipe) -> Callable:
        """cache-dit's registered BlockAdapter for the pipeline's class, else for the denoiser's class.

        The zoo pipelines' class names are not cache-dit's, but their DiT and PixArt denoisers are;
        the adapter is built for the real pipeline so that cache-dit resets its context per call.
        """
        from cache_dit import BlockAdapterRegister

        for name in (type(pipe).__name__, type(model).__name__):
            for prefix, factory in BlockAdapterRegister._adapters.items():
                if name.startswith(prefix):
                    return factory
        raise NotApplicable(f"cache-dit has no block adapter for {type(pipe).__name__} or {type(model).__name__}")

    def install(self, handle, config, prepared):
        import cache_dit

        values = dict(config.values)
        order = values.pop("taylorseer_order", 0)
        calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=order) if order else None
        cfg = getattr(handle.sampler, "cfg", None)
        if cfg in ("batched", "split"):
            values.setdefault("enable_separate_cfg", cfg == "split")
        with _quiet("cache_dit"):
            adapter = self._adapter_factory(handle.model, handle.pipe)(handle.pipe)
            cache_dit.enable_cache(adapter, cache_config=cache_dit.DBCacheConfig(**values),
                                   calibrator_config=calibrator)

        def remove():
            with _quiet("cache_dit"):
                cache_dit.disable_cache(adapter)

        return remove

    def held(self, handle):
        return [getattr(handle.pipe, "_context_manager", None)]


# ---------------------------------------------------------------------------------------------
# DeepCache (the package)


class DeepCachePackagePeer(Peer):
    """The DeepCache package's ``DeepCacheSDHelper`` on ``pipe.unet``.

    The helper finds the step index with ``scheduler.timesteps.index(timestep.item())``, which
    needs the scalar timestep diffusers' SD pipelines pass; pipelines that pass one timestep per
    sample (the zoo's) get it read from the first element. Everything else is the package's code.
    """

    package = "DeepCache"

    def check(self, model, pipe, sampler):
        if pipe is None or getattr(pipe, "unet", None) is not model:
            where = f"{type(pipe).__name__} denoises with" if pipe is not None else "the target is a bare"
            raise NotApplicable(f"DeepCacheSDHelper drives a pipeline's .unet; {where} {type(model).__name__}")
        if not all(hasattr(model, name) for name in ("down_blocks", "mid_block", "up_blocks")):
            raise NotApplicable(f"{type(model).__name__} has no down/mid/up blocks")

    def install(self, handle, config, prepared):
        helper = _deepcache_helper_class()(pipe=handle.pipe)
        helper.set_params(**config.values)
        helper.enable()
        handle.state = helper
        return helper.disable

    def held(self, handle):
        return [getattr(handle.state, "cached_output", None)]


def _deepcache_helper_class():
    from DeepCache import DeepCacheSDHelper

    class Helper(DeepCacheSDHelper):
        def wrap_unet_forward(self):
            self.function_dict["unet_forward"] = self.pipe.unet.forward

            def wrapped_forward(*args, **kwargs):
                t = args[1] if len(args) > 1 else kwargs["timestep"]
                t = t.flatten()[0].item() if torch.is_tensor(t) else t
                self.cur_timestep = list(self.pipe.scheduler.timesteps).index(t)
                return self.function_dict["unet_forward"](*args, **kwargs)

            self.pipe.unet.forward = wrapped_forward

    return Helper


PEERS: dict[str, Peer] = {
    "diffusers.FirstBlockCache": FirstBlockCachePeer(),
    "diffusers.TaylorSeerCache": TaylorSeerPeer(),
    "diffusers.MagCache": MagCachePeer(),
    "diffusers.FasterCache": FasterCachePeer(),
    "diffusers.PyramidAttentionBroadcast": PyramidAttentionBroadcastPeer(),
    "cache-dit.DBCache": CacheDiTPeer(),
    "DeepCache.DeepCacheSDHelper": DeepCachePackagePeer(),
}


# ---------------------------------------------------------------------------------------------
# the handle: install, loop tracking, removal without a trace


class _Loop:
    """Where the pipeline's denoising loop is: run starts, step index, denoiser call within the step, timestep."""

    def __init__(self) -> None:
        self.step = 0
        self.call = 0
        self.timestep: float | None = None


class PeerHandle:
    """A peer installed on a sampler's denoiser; ``remove()`` takes it off and restores what it left behind."""

    def __init__(self, sampler: Any, config: PeerConfig, prepared: dict | None = None):
        self.sampler = sampler
        self.config = config
        self.peer = PEERS[config.peer]
        self.model, self.pipe = find_denoiser(sampler.target)
        self.scheduler = sampler.scheduler or getattr(sampler.target, "scheduler", None)
        self.info: dict = {"notes": []}
        self.state: Any = None  # what the peer's install keeps for held()
        self.loop = _Loop()
        self._context = None
        self._trace = _Trace([*self.model.modules(), *([self.pipe, type(self.pipe)] if self.pipe is not None else [])])
        self._hooks = HookSet()
        self._torch_hooks: list = []
        self._undo: Callable[[], None] | None = None
        self._removed = False
        try:
            if self.scheduler is not None:
                self._hooks.wrap_method(self.scheduler, "set_timesteps", self._set_timesteps)
                self._hooks.wrap_method(self.scheduler, "step", self._step)
            self._torch_hooks = [self.model.register_forward_pre_hook(self._before_call, with_kwargs=True),
                                 self.model.register_forward_hook(self._after_call, always_call=True)]
            self._timestep_of = _timestep_reader(self.model)
            self._undo = self.peer.install(self, config, prepared or {})
        except BaseException:
            self._removed = True
            self._take_off()
            raise

    # -- loop tracking
    def _set_timesteps(self, original, *args, **kwargs):
        result = original(*args, **kwargs)
        self.loop.step, self.loop.call = 0, 0
        if self._undo is not None:
            self.peer.on_run_start(self)
        return result

    def _step(self, original, *args, **kwargs):
        result = original(*args, **kwargs)
        self.loop.step += 1
        self.loop.call = 0
        return result

    def _before_call(self, module, args, kwargs):
        self.loop.timestep = self._timestep_of(args, kwargs)
        if self.peer.needs_context and hasattr(module, "cache_context"):
            self._context = module.cache_context(f"call{self.loop.call}")
            self._context.__enter__()

    def _after_call(self, module, args, output):
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)
        self.loop.call += 1

    # -- the record's fields
    def cache_tensors(self) -> list[torch.Tensor]:
        return _tensors(self.peer.held(self))

    def stats(self) -> None:
        return None  # peers keep no step counts of their own; the runner counts full steps from per-step MACs

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        self._take_off()

    def _take_off(self) -> None:
        try:
            if self._undo is not None:
                self._undo()
        finally:
            for handle in self._torch_hooks:
                handle.remove()
            self._hooks.remove()
            restored = self._trace.restore()
            self.info.setdefault("left_behind", sorted(set(restored)))


def _timestep_reader(model: nn.Module) -> Callable[[tuple, dict], float | None]:
    signature = inspect.signature(model.forward)

    def read(args: tuple, kwargs: dict) -> float | None:
        try:
            t = signature.bind_partial(*args, **kwargs).arguments.get("timestep")
        except TypeError:
            t = kwargs.get("timestep")
        if t is None:
            return None
        return float(t.flatten()[0]) if torch.is_tensor(t) else float(t)

    return read


class _Trace:
    """The instance (and class) attributes of some objects, to put back exactly after a library's removal.

    Attributes added since are deleted, replaced ones restored, and dicts held in attributes
    (a module's ``_modules``, ``_forward_hooks``, ...) get their old contents back.
    """

    _MISSING = object()

    def __init__(self, objects: Iterable[Any]) -> None:
        self._saved = []
        for obj in objects:
            attrs = dict(vars(obj))
            contents = {k: dict(v) for k, v in attrs.items() if isinstance(v, dict)}
            self._saved.append((obj, attrs, contents))

    def restore(self) -> list[str]:
        """Put everything back; the names of what had changed (``Class.attribute``)."""
        changed = []
        for obj, attrs, contents in self._saved:
            owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
            current = vars(obj)
            for key in [k for k in current if k not in attrs]:
                changed.append(f"{owner}.{key}")
                delattr(obj, key) if isinstance(obj, type) else current.pop(key)
            for key, value in attrs.items():
                if current.get(key, self._MISSING) is not value:
                    changed.append(f"{owner}.{key}")
                    setattr(obj, key, value) if isinstance(obj, type) else current.__setitem__(key, value)
                if key in contents and dict(value) != contents[key]:
                    changed.append(f"{owner}.{key}")
                    value.clear()
                    value.update(contents[key])
        return changed


def _tensors(values: Iterable[Any], depth: int = 16) -> list[torch.Tensor]:
    """Tensors reachable from ``values`` through containers and plain objects' attributes (not modules), once each."""
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(value: Any, level: int) -> None:
        if value is None or level > depth or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found.setdefault(value.untyped_storage().data_ptr() if value.numel() else id(value), value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, level + 1)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                walk(item, level + 1)
        elif isinstance(value, nn.Module) or callable(value) or isinstance(value, (str, bytes, int, float, type)):
            return
        elif hasattr(value, "__dict__"):
            walk(vars(value), level + 1)

    for value in values:
        walk(value, 0)
    return list(found.values())


def measure_setup(sampler: Any, config: PeerConfig, steps: int, seed: int, memo: dict | None = None
                  ) -> tuple[Callable[[], PeerHandle], dict]:
    """Check that ``config`` applies and do its one-off preparation: (attach function, record info).

    Raises NotApplicable with the reason where it does not apply. The info has the
    preparation's results (MagCache's calibration), the hooked modules, notes, and what
    removal had to put back. ``memo`` (one dict per bench run) shares a preparation between
    the settings of one peer.
    """
    peer = PEERS[config.peer]
    if peer.version() is None:
        raise NotApplicable(f"{peer.package} is not installed (pip install 'stepcache[peers]')")
    model, pipe = find_denoiser(sampler.target)
    peer.check(model, pipe, sampler)
    memo = {} if memo is None else memo
    key = (config.peer, steps, seed)
    if key not in memo:
        memo[key] = peer.prepare(lambda cfg: PeerHandle(sampler, cfg), sampler, config, steps, seed)
    prepared = memo[key]
    probe = PeerHandle(sampler, config, prepared)  # raises NotApplicable where nothing gets hooked
    probe.remove()
    return (lambda: PeerHandle(sampler, config, prepared)), {**prepared, **probe.info}
