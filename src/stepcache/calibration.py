"""Fitting TeaCache's rescaling polynomial for a model: ``stepcache.calibrate(pipe, ...)``.

TeaCache decides from how much the first block's modulated input changed since the
previous step, but what it must bound is how much the model output changed, and the
relation between the two differs per model. Calibration runs a few uncached
generations, records per step and CFG branch the relative L1 change of the modulated
input (x) and of the model output (y) against the previous step, and fits y ≈ p(x) by
least squares (``numpy.polyfit``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from .adapters import BLOCKS, MODULATED_INPUT
from .api import cached
from .bench.executor import SerialExecutor
from .core.validate import check_int
from .methods.base import CacheConfig, CacheMethod
from .methods.teacache import Calibration, relative_l1

MAX_DEGREE = 8  # beyond this polyfit is ill-conditioned on distances in [0, 1]


def calibrate(pipe: Any, *call_args, seeds: Sequence[int] = (0, 1, 2), degree: int = 4, executor: Any = None,
              **call_kwargs) -> Calibration:
    """Fit TeaCache coefficients for ``pipe``'s denoiser from uncached generations.

    Calls ``pipe(*call_args, generator=<seeded CPU generator>, **call_kwargs)`` once per
    seed (pass e.g. the inputs, ``num_inference_steps`` and ``output_type`` as for a normal
    call). Returns the fit; ``.save(path)`` writes the JSON ``TeaCacheConfig`` reads.
    ``executor`` (``stepcache.bench.executor``, e.g. Ray) runs the seeds' generations as
    independent cells; the fit is the serial one. Default: one after another, here.
    """
    check_int("calibrate", "degree", degree, 1, MAX_DEGREE)
    if len(seeds) == 0:
        raise ValueError("calibrate needs at least one seed")
    cells = [functools.partial(_seed_distances, pipe, seed, call_args, call_kwargs) for seed in seeds]
    runs = (executor or SerialExecutor()).map(cells)
    model_class = runs[0][0]
    # every denoiser's pairs (Wan 2.2: both experts, which TeaCache then serves with these coefficients),
    # denoiser by denoiser, each in seed order
    inputs = [x for d in range(len(runs[0][1])) for _, pairs in runs for x in pairs[d][0]]
    outputs = [y for d in range(len(runs[0][1])) for _, pairs in runs for y in pairs[d][1]]
    coefficients, fit_error = fit_coefficients(inputs, outputs, degree)
    return Calibration(model_class, coefficients, fit_error, len(inputs))


def _seed_distances(pipe: Any, seed: int, call_args: tuple, call_kwargs: dict) -> tuple[str, list]:
    """One seed's generation: (denoiser class, per denoiser its (input distances, output distances))."""
    with cached(pipe, DistanceRecording()) as handle:
        pipe(*call_args, generator=torch.Generator().manual_seed(seed), **call_kwargs)
        return type(handle.model).__name__, [(d.method.input_distances, d.method.output_distances)
                                             for d in handle.denoisers]


def fit_coefficients(
    input_distances: Sequence[float], output_distances: Sequence[float], degree: int
) -> tuple[tuple[float, ...], float]:
    """Least-squares polynomial (highest degree first) and its relative mean absolute error."""
    x = np.asarray(input_distances, dtype=np.float64)
    y = np.asarray(output_distances, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two equally long 1-D sequences of distances, got shapes {x.shape} and {y.shape}")
    if len(x) <= degree:
        raise ValueError(
            f"a degree-{degree} fit needs more than {degree} (input, output) pairs, got {len(x)}; "
            "use more steps or seeds, or a lower degree"
        )
    coefficients = np.polyfit(x, y, degree)
    fit_error = float(np.mean(np.abs(np.polyval(coefficients, x) - y)) / np.mean(np.abs(y)))
    return tuple(float(c) for c in coefficients), fit_error


@dataclass(frozen=True)
class DistanceRecording(CacheConfig):
    """Records TeaCache's (input distance, output distance) pairs; caches nothing (not a user method)."""

    method: ClassVar[str] = "teacache-calibration"
    requires: ClassVar[frozenset[str]] = frozenset({BLOCKS, MODULATED_INPUT})

    def build(self, adapter, clock) -> "DistanceRecorder":
        return DistanceRecorder(self, adapter, clock)


class DistanceRecorder(CacheMethod):
    """Per CFG branch, compares each call's modulated input and output with the previous step's.

    Under sequence parallelism the input distance is reduced over the ranks holding parts of the image
    (core/distributed.py), so every rank fits the single-process coefficients; the output is whole on
    every rank (the model gathers it).
    """

    adaptive = True

    def __init__(self, config, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        self.first_block = adapter.blocks()[0]
        self.input_distances: list[float] = []
        self.output_distances: list[float] = []
        self.signal: torch.Tensor | None = None  # this call's modulated input
        self.previous: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # branch -> (signal, output)

    def install(self, hooks) -> None:
        hooks.wrap(self.first_block, self._first_block)

    def clear(self) -> None:
        self.previous.clear()
        self.signal = None

    def _first_block(self, original, *args, **kwargs):
        self.signal = self.adapter.modulated_input(self.first_block, args, kwargs)
        return original(*args, **kwargs)

    def after_call(self, ctx, output):
        sample = output[0]  # diffusers outputs and return_dict=False tuples both index this way
        if ctx.branch in self.previous:
            previous_signal, previous_sample = self.previous[ctx.branch]
            self.input_distances.append(relative_l1(self.signal, previous_signal, self.sharding, ctx.step))
            self.output_distances.append(relative_l1(sample, previous_sample))
        self.previous[ctx.branch] = (self.signal, sample)
        return output
