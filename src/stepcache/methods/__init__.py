"""The caching methods, one module each, and the registry the API and CLI read."""

from __future__ import annotations

from .base import CacheConfig, CacheMethod

# method name -> config class; each method module adds itself here
METHODS: dict[str, type[CacheConfig]] = {}


def register(config_class: type[CacheConfig]) -> type[CacheConfig]:
    METHODS[config_class.method] = config_class
    return config_class


__all__ = ["CacheConfig", "CacheMethod", "METHODS", "register"]
from . import tgate  # noqa: E402,F401
from . import deepcache  # noqa: E402,F401
from . import adacache  # noqa: E402,F401
from . import teacache  # noqa: E402,F401
from . import fora  # noqa: E402,F401
from . import delta_dit  # noqa: E402,F401
