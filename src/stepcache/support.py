"""Which method runs on which model family, from what methods need and adapters offer.

The README's method table is ``support_table()``'s output (tests/test_support.py checks it is).
"""

from __future__ import annotations

from .adapters import ADAPTERS, CAPABILITIES, Adapter, missing_capabilities
from .methods import METHODS, CacheConfig


def _classes(adapter: type[Adapter]) -> list[type | None]:
    return list(adapter.model_classes) or [None]  # a family taken by structure has no class list


def _offered(adapter: type[Adapter], model_class: type | None) -> frozenset[str]:
    return adapter.capabilities if model_class is None else adapter.capabilities_of(model_class)


def families_for(config: type[CacheConfig]) -> list[str]:
    """The families on whose models (some or all of them) the method runs."""
    return [a.family for a in ADAPTERS if any(config.fits(_offered(a, c)) for c in _classes(a))]


def support_cell(config: type[CacheConfig], adapter: type[Adapter]) -> str:
    """"yes", "– (no X)", or for a family whose model classes differ which ones and why not the others."""
    missing = {c: missing_capabilities(config.requires, _offered(adapter, c)) for c in _classes(adapter)}
    fit = [c for c, m in missing.items() if not m]
    if len(fit) == len(missing):
        return "yes"

    def why(lacking: list[str]) -> str:
        return ", ".join("no " + CAPABILITIES[c] for c in lacking)

    if not fit:
        common = [c for c in CAPABILITIES if all(c in m for m in missing.values())]
        return f"– ({why(common)})"
    return "yes ({}; not {})".format(
        ", ".join(c.__name__ for c in fit),
        "; ".join(f"{c.__name__}: {why(m)}" for c, m in missing.items() if m))


def support_table() -> str:
    """The markdown table of every family (rows) against every method (columns)."""
    methods = sorted(METHODS.values(), key=lambda cls: cls.method)
    lines = ["| family | models | " + " | ".join(f"{cls.method} (`{cls.__name__}`)" for cls in methods) + " |",
             "| --- | --- |" + " --- |" * len(methods)]
    for adapter in ADAPTERS:
        models = ", ".join(f"`{c.__name__}`" for c in adapter.model_classes) or \
            "blocks described by diffusers' `TransformerBlockRegistry` (one list, one class)"
        if adapter.note:
            models += f"; {adapter.note}"
        cells = [support_cell(cls, adapter) for cls in methods]
        lines.append(f"| {adapter.label or adapter.family} | {models} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(support_table(), end="")
