"""Wrap a module's ``forward`` (or any object's method) and put the original back exactly.

A wrapper is installed as an instance attribute, so ``nn.Module.__call__`` (and every
torch hook around it) keeps working, and removal deletes that attribute again: the
object is left as it was, with no marker attribute behind.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

Wrapper = Callable[..., Any]  # wrapper(original, *args, **kwargs)


class HookSet:
    """The wrappers one handle installed; removes them in reverse order."""

    def __init__(self) -> None:
        # (object, attribute name, installed function, had its own attribute, previous value)
        self._installed: list[tuple[Any, str, Callable, bool, Any]] = []

    def wrap(self, module: nn.Module, wrapper: Wrapper) -> None:
        self.wrap_method(module, "forward", wrapper)

    def wrap_method(self, obj: Any, name: str, wrapper: Wrapper) -> None:
        had_own = name in obj.__dict__
        previous = obj.__dict__.get(name)
        original = getattr(obj, name)

        # wraps(): pipelines inspect e.g. scheduler.set_timesteps' signature, which must stay the original's
        @functools.wraps(original)
        def installed(*args, **kwargs):
            return wrapper(original, *args, **kwargs)

        setattr(obj, name, installed)
        self._installed.append((obj, name, installed, had_own, previous))

    def remove(self) -> None:
        while self._installed:
            obj, name, installed, had_own, previous = self._installed.pop()
            if obj.__dict__.get(name) is not installed:
                raise RuntimeError(
                    f"{type(obj).__name__}.{name} was replaced after stepcache wrapped it; "
                    "remove the other wrapper first so both can be undone in order"
                )
            if had_own:
                setattr(obj, name, previous)
            else:
                delattr(obj, name)

    def __len__(self) -> int:
        return len(self._installed)
