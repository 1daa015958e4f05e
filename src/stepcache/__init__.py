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
# commands that need no model do not import every diffusers model class (seconds). Every registered
# method's config class (stepcache.FORAConfig, ...) is public too, found in the method registry.
_EXPORTS = {
    "UnsupportedModelError": ".adapters",
    "CacheHandle": ".api", "apply": ".api", "cached": ".api",
    "METHODS": ".methods", "CacheConfig": ".methods",
    "calibrate": ".calibration",
    "ShardMismatchError": ".core.distributed", "UnreadableShardingError": ".core.distributed",
    "load_config": ".config_files", "save_config": ".config_files", "UsageError": ".errors",
    "tune": ".bench.tune",
}

_SUBMODULES = ("presets",)  # stepcache.presets.get("deepcache-sd15")


def _config_names() -> list[str]:
    from .methods import METHODS

    return [cls.__name__ for cls in METHODS.values()]


def __getattr__(name: str) -> Any:
    if name == "__all__":  # `from stepcache import *`: the config names need the registry
        return sorted([*_EXPORTS, *_SUBMODULES, *_config_names()])
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it as an attribute
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name.endswith("Config") and not name.startswith("_"):
        from .methods import config_named

        value = config_named(name)
        if value is None:
            raise AttributeError(f"module 'stepcache' has no attribute {name!r}; method configs: "
                                 + ", ".join(sorted(_config_names())))
    else:
        raise AttributeError(f"module 'stepcache' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES) | set(_config_names()))
