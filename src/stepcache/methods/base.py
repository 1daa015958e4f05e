"""What every caching method is: a frozen, validated config and the hooks it builds from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch

from ..adapters import Adapter, UnsupportedModelError
from ..core.hooks import HookSet
from ..core.state import RunRecord, StepClock, StepContext


@dataclass(frozen=True)
class CacheConfig:
    """Base of every method's config. Subclasses validate their fields in ``__post_init__``."""

    method: ClassVar[str] = ""  # the name users and the CLI know the method by
    families: ClassVar[tuple[str, ...]] = ()  # model families the method works on

    def build(self, adapter: Adapter, clock: StepClock) -> "CacheMethod":
        raise NotImplementedError


class CacheMethod:
    """The live side of a config: installs hooks on one model and holds its caches.

    The handle calls ``install`` once, ``on_run_start``/``on_run_end`` around every run
    and ``model_call`` with each denoiser call's context; hooks on submodules read the
    context of the call in progress from ``clock.current``.
    """

    def __init__(self, config: CacheConfig, adapter: Adapter, clock: StepClock) -> None:
        if adapter.family not in config.families:
            raise UnsupportedModelError(
                f"{type(config).__name__} works on {', '.join(config.families)} models, "
                f"not on {type(adapter.model).__name__} ({adapter.family})"
            )
        self.config = config
        self.adapter = adapter
        self.clock = clock

    def install(self, hooks: HookSet) -> None:
        raise NotImplementedError

    def model_call(self, ctx: StepContext, forward, args: tuple, kwargs: dict) -> Any:
        """Run one denoiser call; a method may override it to change the call itself."""
        return forward(*args, **kwargs)

    def on_run_start(self, record: RunRecord) -> None:
        self.clear()

    def on_run_end(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Drop every cached tensor."""

    def cache_tensors(self) -> Iterable[torch.Tensor]:
        return ()

    def extra_stats(self) -> dict:
        return {}

    def mark_cached(self) -> None:
        """Record that the step of the call in progress reused cached work."""
        self.clock.mark_cached(self.clock.current.step)


def tensor_bytes(values: Iterable[Any]) -> int:
    """Bytes held by the tensors in ``values`` (nested tuples/lists/dicts allowed; others ignored)."""
    total = 0
    for value in values:
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, (tuple, list)):
            total += tensor_bytes(value)
        elif isinstance(value, dict):
            total += tensor_bytes(value.values())
    return total
