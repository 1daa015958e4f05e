"""The caching methods, one module each, and the registry the API and CLI read.

Every module in this package registers its config class with ``@register`` when imported, and
every module here is imported below: adding a method is adding one module.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import CacheConfig, CacheMethod

# method name -> config class; each method module adds itself here
METHODS: dict[str, type[CacheConfig]] = {}


def register(config_class: type[CacheConfig]) -> type[CacheConfig]:
    if config_class.method in METHODS:
        raise RuntimeError(f"two configs register the method name {config_class.method!r}: "
                           f"{METHODS[config_class.method].__name__} and {config_class.__name__}")
    METHODS[config_class.method] = config_class
    return config_class


def config_named(class_name: str) -> type[CacheConfig] | None:
    """The registered config class called ``class_name`` (e.g. "FORAConfig"), or None."""
    return next((cls for cls in METHODS.values() if cls.__name__ == class_name), None)


__all__ = ["CacheConfig", "CacheMethod", "METHODS", "config_named", "register"]


def import_methods(path=__path__) -> None:
    """Import every module under ``path`` as a module of this package: each registers its method."""
    for module in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}")


import_methods()
