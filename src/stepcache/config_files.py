"""Configs as data: ``{"method": "teacache", "threshold": 0.2, ...}`` in a JSON or YAML file.

The same record the benchmarks write for every config (``as_record``), so a config
``stepcache tune`` picked, or one read off a results file, can be passed straight to
``stepcache.apply(pipe, "cfg.json")``, ``stepcache generate --config`` or ``bench --config``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .errors import UsageError
from .methods import METHODS, CacheConfig

YAML_SUFFIXES = (".yaml", ".yml")


def config_class(method: str) -> type[CacheConfig]:
    """The config class registered as ``method``; UsageError listing the known methods otherwise."""
    if method not in METHODS:
        known = ", ".join(sorted(METHODS)) or "none registered"
        raise UsageError(f"unknown method {method!r}; known methods: {known}")
    return METHODS[method]


def field_names(cls: type[CacheConfig]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def as_record(config: CacheConfig | None) -> dict | None:
    """The exact config as JSON: method name and every field."""
    if config is None:
        return None
    return {"method": config.method, **dataclasses.asdict(config)}


def config_from_record(record: Mapping[str, Any]) -> CacheConfig:
    """``{"method": ..., FIELD: value}`` -> that method's config (JSON lists become tuples)."""
    if not isinstance(record, Mapping) or "method" not in record:
        raise UsageError('a config is a mapping with a "method" key and the fields to set, e.g. '
                         '{"method": "fora", "interval": 3}')
    cls = config_class(record["method"])
    fields = {k: _tuples(v) for k, v in record.items() if k != "method"}
    unknown = sorted(set(fields) - set(field_names(cls)))
    if unknown:
        raise UsageError(f"{cls.method} has no parameter {unknown[0]!r}; its parameters: {', '.join(field_names(cls))}")
    return cls(**fields)


def load_config(path: str | os.PathLike) -> CacheConfig:
    """The config in a JSON or YAML file (``.yaml``/``.yml``); UsageError naming the file if it cannot be used."""
    try:
        return config_from_record(read_config_record(path))
    except ValueError as error:  # a field out of range: the file is what to fix
        raise UsageError(f"{path}: {error}") from None


def read_config_record(path: str | os.PathLike) -> dict:
    """The ``{"method": ..., FIELD: value}`` mapping in a JSON or YAML file, not yet a config (fields unchecked)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read config file {path}: {error.strerror or error}") from None
    if path.suffix.lower() in YAML_SUFFIXES:
        try:
            import yaml
        except ImportError:
            raise UsageError(f"{path}: YAML config files need PyYAML (pip install pyyaml); or write JSON") from None
        parse, errors, kind = yaml.safe_load, yaml.YAMLError, "YAML"
    else:
        parse, errors, kind = json.loads, json.JSONDecodeError, "JSON"
    try:
        record = parse(text)
    except errors as error:
        raise UsageError(f"{path} is not valid {kind}: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("method"), str):
        raise UsageError(f'{path}: a config file holds a mapping with a "method" key and the fields to set, e.g. '
                         '{"method": "fora", "interval": 3}')
    config_class(record["method"])
    return {k: _tuples(v) for k, v in record.items()}


def save_config(config: CacheConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as JSON, or YAML for a ``.yaml``/``.yml`` path; ``load_config`` reads it back equal."""
    path = Path(path)
    record = as_record(config)
    if path.suffix.lower() in YAML_SUFFIXES:
        import yaml

        text = yaml.safe_dump(_lists(record), sort_keys=False)
    else:
        text = json.dumps(record, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tuples(value: Any) -> Any:
    # config fields hold tuples (hashable configs); JSON and YAML only have lists
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One config field as ``stepcache methods`` shows it."""

    name: str
    default: Any
    allowed: str
    meaning: str


def field_docs(cls: type[CacheConfig]) -> list[FieldDoc]:
    """Every field of ``cls``: default, allowed values and meaning, read off the class itself.

    The allowed values are what the config's own validation says when given a value it
    cannot accept; the meaning is the field's entry in the docstrings of the class and its
    bases ("name: text" sections) or else the comment on or just above the field's line in
    its class. Nothing here is a second copy to keep in step.
    """
    meanings: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        meanings.update(_field_comments(klass))
        meanings.update(_docstring_fields(klass.__doc__ or ""))
    docs = []
    # the method's own fields first, then the options every method shares (keyword-only)
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.kw_only):
        if f.init:
            default = f.default if f.default is not dataclasses.MISSING else None
            docs.append(FieldDoc(f.name, default, _allowed(cls, f), meanings.get(f.name, "")))
    return docs


class _Probe:
    """A value no field accepts: the config's error message then states what it does accept."""

    def __repr__(self) -> str:
        return "<probe>"


def _allowed(cls: type[CacheConfig], f: dataclasses.Field) -> str:
    prefix = f"{cls.__name__}.{f.name} must be "
    try:
        cls(**{f.name: _Probe()})
    except (ValueError, TypeError) as error:
        text = str(error)
        if text.startswith(prefix) and text.endswith(", got <probe>"):
            allowed = text[len(prefix):-len(", got <probe>")]
            return allowed + (" or None" if f.default is None and "None" not in allowed else "")
    hint = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return f"type {hint}"


def _docstring_fields(doc: str) -> dict[str, str]:
    """``name: text`` entries of a docstring, with their indented continuation lines, as one line each."""
    entries: dict[str, str] = {}
    name, indent = None, 0
    for line in doc.splitlines():
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        head, sep, rest = stripped.partition(": ")
        if sep and head.isidentifier() and (name is None or depth <= indent):
            name, indent = head, depth
            entries[name] = rest
        elif name is not None and stripped and depth > indent:
            entries[name] += " " + stripped
        else:
            name = None
    return entries


def _field_comments(klass: type) -> dict[str, str]:
    """``name: type = default  # comment`` (or comment lines just above it) in ``klass``'s own source."""
    import inspect
    import textwrap

    try:
        lines = textwrap.dedent(inspect.getsource(klass)).splitlines()
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        head, sep, _ = stripped.partition(":")
        if sep and head.isidentifier() and len(line) - len(line.lstrip()) == 4 and not stripped.startswith("def"):
            trailing = stripped.partition("  # ")[2]
            text = " ".join(part for part in (" ".join(above), trailing) if part)
            if text:
                comments[head] = text
        above = []
    return comments
