"""Model-family adapters and the lookup from a model to its adapter.

Every module in this package that defines an ``Adapter`` subclass with a ``family`` is a
family: it is found here by importing the package's modules, so adding a family is adding
one module. Classes are matched exactly first, then by subclass, then families that accept
models by their structure rather than their class (``Adapter.accepts``: the generic path).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from torch import nn

from .base import (
    ADALN_GATES,
    BLOCKS,
    CAPABILITIES,
    CROSS_ATTENTION,
    CROSS_ATTN,
    DIT,
    FEED_FORWARD,
    FRAMES,
    GATED_ATTENTION,
    MODULATED_INPUT,
    SELF_ATTN,
    SKIP_LEVELS,
    SUBLAYER_ROLES,
    SUBLAYERS,
    Adapter,
)


def discover(path=__path__) -> tuple[type[Adapter], ...]:
    """The adapters the modules under ``path`` (imported as modules of this package) define, fallbacks last."""
    found = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found += [cls for cls in vars(module).values() if inspect.isclass(cls) and issubclass(cls, Adapter)
                  and cls.__module__ == module.__name__ and cls.family]
    found.sort(key=lambda cls: not cls.model_classes)  # families taken by structure come last: they are the fallback
    families = [cls.family for cls in found]
    duplicates = sorted({f for f in families if families.count(f) > 1})
    if duplicates:
        raise RuntimeError(f"two adapters claim the family name(s) {duplicates}")
    return tuple(found)


ADAPTERS: tuple[type[Adapter], ...] = discover()


class UnsupportedModelError(TypeError):
    """The model's class belongs to no supported family, or lacks what a method needs."""


def supported_classes() -> list[str]:
    """The denoiser classes with an adapter, then the families that take models by structure."""
    return [cls.__name__ for adapter in ADAPTERS for cls in adapter.model_classes] + [
        adapter.description for adapter in ADAPTERS if not adapter.model_classes]


def adapter_for(model: nn.Module) -> Adapter:
    # exact class first, so a subclass shared by two families cannot be mis-assigned
    for adapter in ADAPTERS:
        if type(model) in adapter.model_classes:
            return adapter(model)
    for adapter in ADAPTERS:
        if adapter.model_classes and isinstance(model, adapter.model_classes):
            return adapter(model)
    for adapter in ADAPTERS:
        if adapter.accepts(model):
            return adapter(model)
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):  # torch.compile(model) returns a wrapper around the model
        raise UnsupportedModelError(
            f"{type(model).__name__} is torch.compile's wrapper around a {type(inner).__name__}: apply stepcache "
            "to the model itself (pipe.transformer = compiled._orig_mod, or apply before compiling) and compile "
            "in place with model.compile()")
    reasons = [reason for adapter in ADAPTERS if (reason := adapter.refusal(model))]
    raise UnsupportedModelError(
        f"stepcache has no adapter for {type(model).__name__}"
        + "".join(f" ({reason})" for reason in reasons)
        + "; supported denoisers: " + ", ".join(supported_classes())
    )


def missing_capabilities(needed, offered) -> list[str]:
    """The capabilities in ``needed`` that ``offered`` lacks, in the order CAPABILITIES lists them."""
    return [c for c in CAPABILITIES if c in needed and c not in offered]


__all__ = [
    "ADALN_GATES",
    "ADAPTERS",
    "Adapter",
    "BLOCKS",
    "CAPABILITIES",
    "CROSS_ATTENTION",
    "CROSS_ATTN",
    "DIT",
    "FEED_FORWARD",
    "FRAMES",
    "GATED_ATTENTION",
    "MODULATED_INPUT",
    "SELF_ATTN",
    "SKIP_LEVELS",
    "SUBLAYERS",
    "SUBLAYER_ROLES",
    "UnsupportedModelError",
    "adapter_for",
    "missing_capabilities",
    "supported_classes",
]
