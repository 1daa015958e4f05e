"""What every caching method is: a frozen, validated config and the hooks it builds from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import torch

from ..adapters import CAPABILITIES, Adapter, UnsupportedModelError, missing_capabilities
from ..core.distributed import NOT_SHARDED, Sharding
from ..core.forecast import Forecast
from ..core.hooks import HookSet
from ..core.validate import check_choice, check_int
from ..core.state import RunRecord, StepClock, StepContext


CONVENTIONS = ("stepcache", "reference")

# A default bench grid the reusing methods add (``default_grids``): forecasting at order 1 with the first and
# last steps full, the settings that led on the zoo models (BENCHMARKS.md).
FORECAST_GRID = {"order": [1], "warmup": [2], "cooldown": [2]}


@dataclass(frozen=True)
class CacheConfig:
    """Base of every method's config. Subclasses validate their fields in ``__post_init__`` (calling super's).

    warmup: the first K steps of every run always run in full.
    cooldown: the last L steps of every run always run in full.
    convention: "stepcache" (default) or "reference": where stepcache deliberately departs from
        the method's reference code (README, "Differences from the reference code"),
        "reference" does what that code does instead, so its schedules and outputs are reproduced.
    """

    method: ClassVar[str] = ""  # the name users and the CLI know the method by
    # adapter capabilities (adapters/base.py) the method needs: it runs on every model whose adapter offers them
    requires: ClassVar[frozenset[str]] = frozenset()
    # the settings `stepcache bench` sweeps when given no grid: grids of field -> values, each swept as a product
    default_grids: ClassVar[tuple[dict[str, list], ...]] = ()

    # keyword-only, so each method's own fields keep their positions (FORAConfig(2))
    warmup: int = field(default=0, kw_only=True)
    cooldown: int = field(default=0, kw_only=True)
    convention: str = field(default="stepcache", kw_only=True)

    def __post_init__(self) -> None:
        check_int(type(self).__name__, "warmup", self.warmup, 0)
        check_int(type(self).__name__, "cooldown", self.cooldown, 0)
        check_choice(type(self).__name__, "convention", self.convention, CONVENTIONS)

    def needs(self) -> frozenset[str]:
        """The capabilities this config needs: ``requires``, and more where a field asks for it."""
        return self.requires

    @classmethod
    def fits(cls, offered: frozenset[str]) -> bool:
        """Whether the method (with its default fields) runs on a model that offers ``offered``."""
        return cls.requires <= offered

    @property
    def reference(self) -> bool:
        """Whether this config follows the method's reference code where stepcache departs from it."""
        return self.convention == "reference"

    def build(self, adapter: Adapter, clock: StepClock) -> "CacheMethod":
        raise NotImplementedError


@dataclass(frozen=True)
class ReuseConfig(CacheConfig):
    """A method that reuses tensors across steps, and can forecast them (core/forecast.py).

    order: 0 reuses the value of the last full step as it is; 1 and 2 extrapolate from the
        last 2 or 3 full steps (a line, a parabola in the step index), keeping that many
        values per cached tensor.
    """

    order: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(type(self).__name__, "order", self.order, 0, 3)


class CacheMethod:
    """The live side of a config: installs hooks on one model and holds its caches.

    The handle calls ``install`` once, ``on_run_start``/``on_run_end`` around every run,
    and around each denoiser call ``before_call`` (which decides how it runs),
    ``after_call`` (with its output) and ``call_ended`` (however it ended).

    Under ``torch.compile`` those three run in Python, outside the compiled graphs, and
    the model's forward is compiled on its own (api.py): every decision and every counter
    lives there. The hooks a method installs on submodules run inside the model's graph,
    so they only read what ``before_call`` prepared for the call (a mode such as "reuse"
    or "store" and the tensors to reuse) and leave what the call computed for
    ``after_call`` to keep: dynamo then guards only on the mode, and a model compiles once
    per compute path (full step, cached step), never per step.
    """

    # True for a method that decides from the activations: it reduces its statistic over ``sharding``, the
    # ranks holding parts of one image (core/distributed.py), which the handle sets before the first run
    adaptive: ClassVar[bool] = False
    sharding: Sharding = NOT_SHARDED

    def __init__(self, config: CacheConfig, adapter: Adapter, clock: StepClock) -> None:
        missing = missing_capabilities(config.needs(), adapter.offers)
        if missing:
            raise UnsupportedModelError(
                f"{type(config).__name__} needs a model with {', '.join(CAPABILITIES[c] for c in missing)}; "
                f"{type(adapter.model).__name__} ({adapter.family}) has no {' and no '.join(CAPABILITIES[c] for c in missing)}"
            )
        self.config = config
        self.adapter = adapter
        self.clock = clock

    def install(self, hooks: HookSet) -> None:
        raise NotImplementedError

    def before_call(self, ctx: StepContext, args: tuple, kwargs: dict) -> "tuple[tuple, dict] | Reply":
        """Decide how a denoiser call runs: the (args, kwargs) to run the model with, or ``Reply(output)``
        to return ``output`` without running it."""
        return args, kwargs

    def after_call(self, ctx: StepContext, output: Any) -> Any:
        """Keep what the call computed; returns the call's output (a method may change it)."""
        return output

    def call_ended(self, ctx: StepContext) -> None:
        """The denoiser call returned or raised: drop what ``before_call`` prepared for it."""

    def on_run_start(self, record: RunRecord) -> None:
        self.clear()
        if self.config.cooldown and record.num_steps is None:
            raise RuntimeError(f"{type(self.config).__name__}.cooldown needs the run's length: pass scheduler= to "
                               "stepcache.apply() or call handle.start_run(num_steps) before the loop")

    def must_run_full(self, step: int, num_steps: int | None) -> bool:
        """Warm-up and cool-down steps run in full, whatever the method's schedule says."""
        config = self.config
        return step < config.warmup or (num_steps is not None and step >= num_steps - config.cooldown)

    def new_forecast(self) -> Forecast:
        """Where the method keeps what it reuses: forecast at the config's order (0 for plain reuse)."""
        return Forecast(getattr(self.config, "order", 0))

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


@dataclass(frozen=True)
class Reply:
    """What ``before_call`` returns to answer a denoiser call without running the model."""

    output: Any


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
