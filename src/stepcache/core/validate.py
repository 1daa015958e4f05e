"""Checks for config fields that raise a ValueError naming the field, the value and the allowed range."""

from __future__ import annotations

import math
from typing import Any, Iterable


def _fail(owner: str, field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{owner}.{field} must be {allowed}, got {value!r}")


def check_int(owner: str, field: str, value: Any, low: int, high: int | None = None) -> None:
    allowed = f"an integer in [{low}, {'inf' if high is None else high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(owner, field, value, allowed)
    if value < low or (high is not None and value > high):
        _fail(owner, field, value, allowed)


def check_float(
    owner: str, field: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False
) -> None:
    allowed = f"a number in {'(' if low_open else '['}{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        _fail(owner, field, value, allowed)
    if value < low or value > high or (low_open and value == low):
        _fail(owner, field, value, allowed)


def check_choice(owner: str, field: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        _fail(owner, field, value, "one of " + ", ".join(repr(c) for c in choices))


def check_step(owner: str, field: str, value: Any) -> None:
    """A step given either as an index (int >= 0) or as a fraction of the run (float in [0, 1])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(owner, field, value, "a step index (int >= 0) or a fraction of the run (float in [0, 1])")
    if isinstance(value, int):
        check_int(owner, field, value, 0)
    else:
        check_float(owner, field, value, 0.0, 1.0)
