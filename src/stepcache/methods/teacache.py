"""TeaCache (arXiv 2411.19108): skip the whole block stack while the modulated input barely changes.

Per step, the timestep-modulated input of the first block F_i (what block 0's attention
sees, not the raw noisy latent) is compared with the previous step's:
x_i = mean|F_i − F_{i−1}| / mean|F_{i−1}|. A polynomial fitted per model class
(``stepcache.calibrate``) rescales x_i to an estimate of how much the model output
changes; the estimates accumulate, and while the sum stays under ``threshold`` the step
returns the first block's input plus the residual the blocks added at the last full
step. A full step resets the sum and refreshes the residual. The first and last steps
are always full.

CFG: the decision is made once per step, at the step's first denoiser call (branch 0),
and holds for every branch of that step; each branch keeps its own residual. With
batched CFG the signal is the whole [uncond, cond] batch, so x_i is a mean over it.

Sequence parallelism: each rank holds a part of the tokens; x_i is formed from
Σ|F_i − F_{i−1}| and Σ|F_{i−1}| added over those ranks, one all-reduce per step from
the second on (core/distributed.py), so every rank takes the single-process decision.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch

from ..adapters import BLOCKS, MODULATED_INPUT
from ..core.distributed import NOT_SHARDED, Sharding
from ..core.memo import OutputMemo
from ..core.residual import ResidualSkip
from ..core.schedules import teacache_step
from ..core.validate import check_float
from . import register
from .base import FORECAST_GRID, CacheMethod, ReuseConfig

IDENTITY = (1.0, 0.0)  # the rescale used without calibration: estimated output change = input change


@register
@dataclass(frozen=True)
class TeaCacheConfig(ReuseConfig):
    """TeaCache: skip all blocks while the rescaled change of block 0's modulated input stays small.

    threshold: δ, the accumulated estimated output change under which steps are skipped
        (0 never skips; the paper uses about 0.1–0.6 with calibrated coefficients).
    coefficients: the rescaling polynomial, highest degree first as ``numpy.polyfit`` gives
        it, or the path of a JSON file written by ``stepcache.calibrate`` (for zoo models:
        ``stepcache.zoo.teacache.teacache_coefficients(name)``). None uses the identity and warns.
        A negative estimate counts as 0 (convention="reference": it is added as it is, as
        TeaCache's code does, which can lower the accumulated sum).
    """

    method: ClassVar[str] = "teacache"
    requires: ClassVar[frozenset[str]] = frozenset({BLOCKS, MODULATED_INPUT})
    default_grids: ClassVar[tuple] = ({"threshold": [0.1, 0.2, 0.4]}, {"threshold": [0.05, 0.1, 0.2], **FORECAST_GRID})

    threshold: float = 0.2
    coefficients: Sequence[float] | str | os.PathLike | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float("TeaCacheConfig", "threshold", self.threshold, 0.0)
        calibration = None
        if isinstance(self.coefficients, (str, os.PathLike)):
            calibration = Calibration.load(self.coefficients)
            polynomial = calibration.coefficients
            object.__setattr__(self, "coefficients", os.fspath(self.coefficients))  # a str keeps records JSON
        elif self.coefficients is None:
            polynomial = IDENTITY
        else:
            polynomial = check_coefficients("TeaCacheConfig.coefficients", self.coefficients)
            object.__setattr__(self, "coefficients", polynomial)  # a tuple keeps the config hashable
        # derived, not fields: the config's identity is what the user passed
        object.__setattr__(self, "_calibration", calibration)
        object.__setattr__(self, "_polynomial", polynomial)

    def build(self, adapter, clock) -> "TeaCache":
        model_class = type(adapter.model).__name__
        if self._calibration is not None and self._calibration.model_class != model_class:
            raise ValueError(
                f"{self.coefficients} holds TeaCache coefficients for {self._calibration.model_class}, "
                f"not for {model_class}; calibrate this model with stepcache.calibrate(pipe, ...)"
            )
        if self.coefficients is None:
            warnings.warn(
                "TeaCacheConfig without coefficients rescales distances by the identity, so the threshold "
                "has no calibrated meaning; fit coefficients with `stepcache calibrate` or stepcache.calibrate()",
                UserWarning,
                stacklevel=3,
            )
        return TeaCache(self, adapter, clock, self._polynomial)


class TeaCache(CacheMethod):
    """Hooks over every block: decide at block 0, then run them all or add the cached residual."""

    adaptive = True

    def __init__(self, config: TeaCacheConfig, adapter, clock, polynomial: tuple[float, ...]) -> None:
        super().__init__(config, adapter, clock)
        blocks = adapter.blocks()
        self.polynomial = polynomial
        self.first_block = blocks[0]
        self.skip = ResidualSkip(adapter, blocks, [(0, len(blocks))], self.new_forecast(), decide=self._decide)
        # block 0 takes the norm output computed for the signal instead of computing it again
        self.signal_norm = OutputMemo(adapter.modulation_norm(self.first_block))
        self.previous_signal: torch.Tensor | None = None  # F_{i-1}, from branch 0
        self.accumulated = 0.0
        self.skipping = False  # this step's decision, taken at branch 0
        self.trace: list[float] = []  # the accumulated distance each step of the last run compared

    def install(self, hooks) -> None:
        self.skip.install(hooks)
        self.signal_norm.install(hooks)

    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        self.accumulated = 0.0
        self.trace = []

    def before_call(self, ctx, args, kwargs):
        self.skip.begin_call(ctx)  # the first block's hook asks _decide
        return args, kwargs

    def after_call(self, ctx, output):
        self.skip.keep(ctx)
        return output

    def call_ended(self, ctx) -> None:
        self.skip.end_call()

    def clear(self) -> None:
        self.skip.clear()
        self.signal_norm.clear()
        self.previous_signal = None

    def cache_tensors(self):
        return [self.skip.deltas.tensors(), self.previous_signal]

    def extra_stats(self) -> dict:
        return {
            "threshold": self.config.threshold,
            "calibrated": self.config.coefficients is not None,
            "accumulated_distance": list(self.trace),
        }

    def _decide(self, args: tuple, kwargs: dict) -> int | None:
        ctx = self.clock.current
        if ctx.branch == 0:
            self.skipping = self._decide_step(ctx, args, kwargs)
        # a branch first seen on a skipped step (a guidance pass that runs only on some steps) runs in full
        if self.skipping and self.skip.has_delta(0, ctx.branch):
            self.signal_norm.clear()  # block 0 will not run to take it
            self.mark_cached()
            return 0  # the one range: every block
        return None

    def _decide_step(self, ctx, args: tuple, kwargs: dict) -> bool:
        if ctx.num_steps is None:
            raise RuntimeError(
                "TeaCache needs the run length to keep the last step full: pass scheduler= to "
                "stepcache.apply() or call handle.start_run(num_steps) before the loop"
            )
        with self.signal_norm.recording():
            signal = self.adapter.modulated_input(self.first_block, args, kwargs)
        previous, self.previous_signal = self.previous_signal, signal
        # previous is None at a run's first step on every rank: the reduction's gate is run state
        distance = 0.0 if previous is None else rescale(
            self.polynomial, relative_l1(signal, previous, self.sharding, ctx.step), clamp=not self.config.reference)
        skip, total = teacache_step(self.accumulated, distance, self.config.threshold, ctx.step, ctx.num_steps)
        skip = skip and not self.must_run_full(ctx.step, ctx.num_steps)
        self.accumulated = total if skip else 0.0
        self.trace.append(total)
        return skip


def relative_l1(current: torch.Tensor, previous: torch.Tensor, sharding: Sharding = NOT_SHARDED,
                step: int = 0) -> float:
    """mean|current − previous| / mean|previous| over every element (the whole batch) of every rank's part.

    With a group, the two sums are added over its ranks (one all-reduce; ``step`` is the guard's).
    """
    if sharding.group is None:
        change = torch.mean((current - previous).abs(), dtype=torch.float32)
        return float(change / torch.mean(previous.abs(), dtype=torch.float32))  # one device sync per step
    sums = torch.stack([torch.sum((current - previous).abs(), dtype=torch.float32),
                        torch.sum(previous.abs(), dtype=torch.float32)])
    change, scale = sharding.sum(sums.double(), step).tolist()
    return change / scale


def rescale(polynomial: Sequence[float], distance: float, clamp: bool = True) -> float:
    """The estimated output change for an input distance; with ``clamp`` never negative, so the sum only
    grows (TeaCache's code adds a negative value as it is: ``clamp=False``)."""
    value = float(np.polyval(polynomial, distance))
    return max(0.0, value) if clamp else value


def check_coefficients(name: str, values) -> tuple[float, ...]:
    """A polynomial as a tuple of floats, or ValueError naming ``name`` and the expected shape."""
    allowed = "a 1-D sequence of finite numbers (polynomial coefficients, highest degree first)"
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {allowed} or a JSON file path, got {values!r}") from None
    if isinstance(values, (str, bytes)) or array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"{name} must be {allowed} or a JSON file path, got {values!r}")
    return tuple(float(c) for c in array)


@dataclass(frozen=True)
class Calibration:
    """TeaCache coefficients fitted for one model class: what ``stepcache.calibrate`` saves as JSON."""

    model_class: str  # the denoiser class they were fitted on, checked when applied
    coefficients: tuple[float, ...]  # highest degree first
    fit_error: float  # mean|fit − true output distance| / mean|true output distance| over the samples
    num_samples: int  # (input distance, output distance) pairs the fit used

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1

    def save(self, path: str | os.PathLike) -> None:
        record = {
            "method": TeaCacheConfig.method,
            "model_class": self.model_class,
            "degree": self.degree,
            "coefficients": list(self.coefficients),
            "fit_error": self.fit_error,
            "num_samples": self.num_samples,
        }
        Path(path).write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        """Read a saved calibration; ValueError naming the file when it is not one."""
        try:
            record = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a TeaCache coefficients JSON file: {error}") from None
        required = ("model_class", "coefficients", "fit_error", "num_samples")
        if not isinstance(record, dict) or record.get("method") != TeaCacheConfig.method or any(
            key not in record for key in required
        ):
            raise ValueError(f"{path} is not a TeaCache coefficients file (written by stepcache calibrate)")
        coefficients = check_coefficients(f"the coefficients in {path}", record["coefficients"])
        if record.get("degree", len(coefficients) - 1) != len(coefficients) - 1:
            raise ValueError(f"{path}: degree {record['degree']} does not match {len(coefficients)} coefficients")
        return cls(record["model_class"], coefficients, float(record["fit_error"]), int(record["num_samples"]))
