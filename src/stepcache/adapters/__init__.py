"""Model-family adapters and the lookup from a model to its adapter."""

from __future__ import annotations

from torch import nn

from .base import CROSS_ATTN, FEED_FORWARD, SELF_ATTN, SUBLAYER_ROLES, Adapter
from .dit import DiTAdapter
from .flux import FluxAdapter
from .pixart import PixArtAdapter
from .sd3 import SD3Adapter
from .unet import UNetAdapter

ADAPTERS: tuple[type[Adapter], ...] = (UNetAdapter, DiTAdapter, PixArtAdapter, SD3Adapter, FluxAdapter)
TRANSFORMER_FAMILIES = ("dit", "pixart", "sd3", "flux")


class UnsupportedModelError(TypeError):
    """The model's class belongs to no supported family."""


def supported_classes() -> list[str]:
    return [cls.__name__ for adapter in ADAPTERS for cls in adapter.model_classes]


def adapter_for(model: nn.Module) -> Adapter:
    # exact class first, so a subclass shared by two families cannot be mis-assigned
    for adapter in ADAPTERS:
        if type(model) in adapter.model_classes:
            return adapter(model)
    for adapter in ADAPTERS:
        if isinstance(model, adapter.model_classes):
            return adapter(model)
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):  # torch.compile(model) returns a wrapper around the model
        raise UnsupportedModelError(
            f"{type(model).__name__} is torch.compile's wrapper around a {type(inner).__name__}: apply stepcache "
            "to the model itself (pipe.transformer = compiled._orig_mod, or apply before compiling) and compile "
            "in place with model.compile()")
    raise UnsupportedModelError(
        f"stepcache has no adapter for {type(model).__name__}; supported denoisers: "
        + ", ".join(supported_classes())
    )


__all__ = [
    "ADAPTERS",
    "Adapter",
    "CROSS_ATTN",
    "FEED_FORWARD",
    "SELF_ATTN",
    "SUBLAYER_ROLES",
    "TRANSFORMER_FAMILIES",
    "UnsupportedModelError",
    "adapter_for",
    "supported_classes",
]
