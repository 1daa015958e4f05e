"""Method configs from text: typed ``--set FIELD=VALUE`` parsing and the parameter grids the bench sweeps.

Everything works off ``stepcache.methods.METHODS`` and each config's dataclass fields, so a
new method needs nothing here; its config's ``default_grids`` are what the bench sweeps by default.
"""

from __future__ import annotations

import dataclasses
import os
import itertools
import types
import typing
from typing import Any

from ..config_files import as_record, config_class, field_names
from ..errors import UsageError
from ..methods import METHODS, CacheConfig

# The settings `stepcache bench` sweeps when no --grid is given: per method, one or more grids (each the
# product of its fields' values), as each config class declares them. The first follows the ranges each
# method's paper reports, from "nearly lossless" to "aggressive"; the others forecast (order 1) with the
# first and last steps full, the settings that led on the zoo models (BENCHMARKS.md).
DEFAULT_GRIDS: dict[str, list[dict[str, list[Any]]]] = {
    name: list(cls.default_grids) for name, cls in METHODS.items() if cls.default_grids}

TUPLE_SEPARATORS = ("/", ":")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def coerce_fields(cls: type[CacheConfig], values: dict[str, str]) -> dict[str, Any]:
    """Text values -> typed field values of ``cls``; unknown field -> UsageError listing the fields."""
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    typed = {}
    for name, text in values.items():
        if name not in names:
            raise UsageError(f"{cls.method} has no parameter {name!r}; its parameters: {', '.join(names)}")
        typed[name] = coerce(text, hints[name], f"{cls.method}.{name}")
    return typed


def make_config(cls: type[CacheConfig], values: dict[str, Any]) -> CacheConfig:
    """``cls`` from field values (text is coerced); a value the config refuses is a UsageError."""
    typed = coerce_fields(cls, values)
    try:
        return cls(**typed)
    except (ValueError, OSError) as error:  # range checks; TeaCache's coefficients file
        raise UsageError(str(error)) from None


def parse_settings(items: list[str], option: str = "--set") -> dict[str, str]:
    """``["threshold=0.2", "order=1"]`` -> {"threshold": "0.2", "order": "1"} (values still text)."""
    settings = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{option} expects FIELD=VALUE, got {item!r}")
        settings[name.strip().replace("-", "_")] = value.strip()
    return settings


def coerce(text: Any, hint: Any, what: str, depth: int = 0) -> Any:
    """Convert command-line ``text`` to type ``hint`` (int, float, bool, str, unions, tuples, Literal)."""
    if not isinstance(text, str):
        return text
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(text, args, what, depth)
    if origin is typing.Literal:
        return _coerce_union(text, tuple(type(a) for a in args), what, depth)
    if origin is tuple:
        return _coerce_tuple(text, args, what, depth)
    return _coerce_scalar(text, hint, what)


def _coerce_tuple(text: str, args: tuple, what: str, depth: int) -> tuple:
    # nested tuples need one separator per level: "0.03:4/0.05:3" is ((0.03, 4), (0.05, 3))
    if depth >= len(TUPLE_SEPARATORS):
        raise UsageError(f"{what}: tuples nested deeper than {len(TUPLE_SEPARATORS)} cannot be given as text")
    parts = [p for p in text.split(TUPLE_SEPARATORS[depth]) if p]
    variadic = not args or (len(args) == 2 and args[1] is Ellipsis)
    items = [args[0] if args else str] * len(parts) if variadic else list(args)
    if len(items) != len(parts):
        raise UsageError(f"{what}: expected {len(items)} values separated by {TUPLE_SEPARATORS[depth]!r}, got {text!r}")
    return tuple(coerce(part, item, what, depth + 1) for part, item in zip(parts, items))


def _coerce_union(text: str, args: tuple, what: str, depth: int) -> Any:
    if type(None) in args and text.lower() == "none":
        return None
    # int before float, so "3" stays a step index and "0.3" becomes a fraction
    order = sorted((a for a in args if a is not type(None)), key=_union_rank)
    for candidate in order:
        try:
            return coerce(text, candidate, what, depth)
        except ValueError:
            continue
    raise UsageError(f"{what}: cannot read {text!r} as {' or '.join(getattr(a, '__name__', str(a)) for a in args)}")


def _union_rank(hint: Any) -> int:
    scalars = (int, float, bool, str)
    return scalars.index(hint) if hint in scalars else len(scalars)


def _coerce_scalar(text: str, hint: Any, what: str) -> Any:
    try:
        if hint is bool:
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
        if hint in (int, float, str):
            return hint(text)
    except ValueError:
        raise UsageError(f"{what}: cannot read {text!r} as {hint.__name__}") from None
    raise UsageError(f"{what}: parameters of type {hint} cannot be given on the command line")


def parse_grid(items: list[str], methods: list[str]) -> dict[str, dict[str, list[str]]]:
    """``["interval=2,3,5", "teacache.threshold=0.1,0.3"]`` -> method -> field -> values (still text).

    A bare ``field=...`` applies to every requested method that has the field.
    """
    grid: dict[str, dict[str, list[str]]] = {m: {} for m in methods}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise UsageError(f"--grid expects FIELD=V1,V2,... or METHOD.FIELD=V1,..., got {item!r}")
        method, _, field = key.rpartition(".")
        targets = [method] if method else [m for m in methods if field in field_names(config_class(m))]
        if method and method not in methods:
            raise UsageError(f"--grid {item!r} names method {method!r}, which is not among --method {methods}")
        if not targets:
            raise UsageError(f"--grid field {field!r} belongs to none of the methods {methods}")
        for target in targets:
            grid[target][field] = values.split(",")
    return grid


def grid_configs(method: str, overrides: dict[str, list[Any]] | None = None,
                 model_defaults: dict[str, Any] | None = None) -> list[CacheConfig]:
    """Every config of ``method``'s grids: its default grids with ``overrides`` replacing fields in each.

    ``model_defaults`` (a Sampler's ``config_defaults[method]``) fill the fields the grid leaves out.
    A config two grids share is listed once.
    """
    cls = config_class(method)
    if method not in DEFAULT_GRIDS and not overrides:
        raise UsageError(f"method {method!r} has no default grid; give one with --grid FIELD=V1,V2,...")
    configs = []
    for default in DEFAULT_GRIDS.get(method, [{}]):
        grid = {**default, **(overrides or {})}
        fields = list(grid)
        for combo in itertools.product(*(grid[f] for f in fields)):
            values = {**(model_defaults or {}), **dict(zip(fields, combo))}
            config = make_config(cls, values)
            if config not in configs:
                configs.append(config)
    return configs


def describe(config: CacheConfig | None) -> str:
    """Label that says exactly what ran, e.g. ``fora interval=3``: every field that differs from its default.

    A field the method's default grids sweep (its main parameters; every field of a method without
    grids) is shown even at its default, unless it is one of the options every method shares
    (warmup, cooldown, order). Fields left at
    None ("the method's automatic choice") are omitted and file paths shortened to their names;
    records keep the exact config next to the label.
    """
    if config is None:
        return "uncached"
    swept = ({name for grid in type(config).default_grids for name in grid}
             or {f.name for f in dataclasses.fields(config)})
    shown = [f for f in dataclasses.fields(config) if f.init and getattr(config, f.name) is not None
             and (getattr(config, f.name) != f.default or (f.name in swept and not f.kw_only))]
    return " ".join([config.method, *(f"{f.name}={_short(getattr(config, f.name))}" for f in shown)])


def _short(value: Any) -> Any:
    return os.path.basename(value) if isinstance(value, (str, os.PathLike)) and os.sep in str(value) else value
