"""Wrap a module's ``forward`` (or any object's method, or an object's call) and undo it exactly.

A method wrapper is installed as an instance attribute, so ``nn.Module.__call__`` (and
every torch hook around it) keeps working, and removal deletes that attribute again: the
object is left as it was, with no marker attribute behind. ``obj(...)`` looks ``__call__``
up on the type, so wrapping a call gives the object a subclass of its own class (same
name and module) and removal puts the original class back.

A module's ``forward`` that diffusers' hook registry wrapped after stepcache (e.g.
``enable_parallelism`` called after ``apply``, which diffusers cannot undo) is unlinked
from inside the registry's chain: its hooks stay, stepcache's wrapper goes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

Wrapper = Callable[..., Any]  # wrapper(original, *args, **kwargs)


class HookSet:
    """The wrappers one handle installed; removes them in reverse order."""

    def __init__(self) -> None:
        # (is it still ours?, undo, what it wraps for the error message, unlink it from a diffusers hook chain)
        self._installed: list[tuple[Callable[[], bool], Callable[[], None], str, Callable[[], bool]]] = []

    def wrap(self, module: nn.Module, wrapper: Wrapper) -> None:
        self.wrap_method(module, "forward", wrapper)

    def wrap_method(self, obj: Any, name: str, wrapper: Wrapper) -> None:
        undo = _restorer(obj, name)
        original = getattr(obj, name)

        # wraps(): pipelines inspect e.g. scheduler.set_timesteps' signature, which must stay the original's
        @functools.wraps(original)
        def installed(*args, **kwargs):
            return wrapper(original, *args, **kwargs)

        setattr(obj, name, installed)
        self._installed.append((lambda: obj.__dict__.get(name) is installed, undo, f"{type(obj).__name__}.{name}",
                                functools.partial(_unlink_from_diffusers_hooks, obj, installed, original)))

    def set_attribute(self, obj: Any, name: str, value: Any) -> None:
        """Give ``obj`` its own attribute ``name`` (e.g. a ``__deepcopy__``); removal puts back what was there."""
        undo = _restorer(obj, name)
        setattr(obj, name, value)
        self._installed.append((lambda: obj.__dict__.get(name) is value, undo, f"{type(obj).__name__}.{name}",
                                _cannot_unlink))

    def wrap_call(self, obj: Any, wrapper: Wrapper) -> None:
        """Wrap ``obj(...)``: ``wrapper(bound original __call__, *args, **kwargs)``."""
        cls = type(obj)
        original = cls.__call__

        @functools.wraps(original)
        def __call__(self_, *args, **kwargs):
            return wrapper(original.__get__(self_, cls), *args, **kwargs)

        subclass = type(cls.__name__, (cls,), {
            "__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__})

        def undo() -> None:
            obj.__class__ = cls

        obj.__class__ = subclass
        self._installed.append((lambda: type(obj) is subclass, undo, f"{cls.__name__}.__class__", _cannot_unlink))

    def remove(self) -> None:
        while self._installed:
            ours, undo, what, unlink = self._installed[-1]
            if not ours():
                if unlink():
                    self._installed.pop()
                    continue
                raise RuntimeError(
                    f"{what} was replaced after stepcache wrapped it; "
                    "remove the other wrapper first so both can be undone in order"
                )
            self._installed.pop()
            undo()

    def __len__(self) -> int:
        return len(self._installed)


def _cannot_unlink() -> bool:
    return False


def _unlink_from_diffusers_hooks(obj: Any, installed: Callable, original: Callable) -> bool:
    """Whether ``installed`` was found inside the hook chain diffusers built on ``obj`` and replaced by ``original``.

    diffusers' ``HookRegistry`` keeps the forward it wrapped in a function reference; pointing that
    reference at what stepcache wrapped leaves diffusers' hooks running and stepcache's gone.
    """
    registry = getattr(obj, "__dict__", {}).get("_diffusers_hook")
    for reference in getattr(registry, "_fn_refs", ()):
        for attribute in ("forward", "original_forward"):
            if getattr(reference, attribute, None) is installed:
                setattr(reference, attribute, original)
                # the registry's outer forward names the one it wrapped (for inspect.signature): ours no longer
                forward = obj.__dict__.get("forward")
                while forward is not None and getattr(forward, "__wrapped__", None) is not None:
                    if forward.__wrapped__ is installed:
                        forward.__wrapped__ = original
                        break
                    forward = forward.__wrapped__
                return True
    return False


def _restorer(obj: Any, name: str):
    """What puts ``obj``'s own attribute ``name`` back as it is now (or deletes it if it has none)."""
    had_own = name in obj.__dict__
    previous = obj.__dict__.get(name)

    def undo() -> None:
        if had_own:
            setattr(obj, name, previous)
        else:
            delattr(obj, name)

    return undo
