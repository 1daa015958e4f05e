"""stepcache: training-free caching across denoising steps for Hugging Face diffusers models.

    handle = stepcache.apply(pipe, stepcache.FORAConfig(interval=3))
    images = pipe(...).images
    print(handle.stats())
    handle.remove()
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it. Imported on first use, so `stepcache --help` and other
# commands that need no model do not import every diffusers model class (seconds).
_EXPORTS = {
    "UnsupportedModelError": ".adapters",
    "CacheHandle": ".api", "apply": ".api", "cached": ".api",
    "METHODS": ".methods", "CacheConfig": ".methods",
    "FORAConfig": ".methods.fora", "DeltaDiTConfig": ".methods.delta_dit", "TeaCacheConfig": ".methods.teacache",
    "DeepCacheConfig": ".methods.deepcache", "TGateConfig": ".methods.tgate", "AdaCacheConfig": ".methods.adacache",
    "calibrate": ".calibration",
}

_SUBMODULES = ("presets",)  # stepcache.presets.get("deepcache-sd15")
__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it as an attribute
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stepcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
