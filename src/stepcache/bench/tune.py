"""``stepcache tune``: the fastest config that meets a quality target and beats sampling fewer steps.

The search is cheap and measured on the user's own pipeline and inputs: every method that
runs on the model over its default grids (coarse), each config sampled once with the same
seed (MACs and quality, no timed runs; MAC speedup is the cost), together with the
uncached sampler at the fewer steps that cost what each config costs. A config qualifies
when it meets the target and its score beats that fewer-steps run's: otherwise sampling
less would do as well for free. Each method's fastest qualifying config is then refined:
the one numeric field in which it differs from the next faster config of its method is
bisected (``refine`` rounds), since the best setting usually lies between two grid points.

The evidence is the Pareto front of everything measured (no config both faster and
better), each point marked as meeting the target or not and against fewer steps.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import UsageError
from ..methods.base import CacheConfig
from .configs import config_class, describe, grid_configs
from .report import _baseline, _psnr_text
from .runner import does_not_apply, run
from .samplers import Sampler, pipeline_sampler

# metric -> (the direction that is better, where a record keeps it)
METRICS = {
    "psnr": (">=", "fidelity"),
    "ssim": (">=", "fidelity"),
    "feature_distance": ("<=", "fidelity"),
    "accuracy": (">=", "distribution"),
    "frechet": ("<=", "distribution"),
}
_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """A quality target such as ``psnr>=30``: the metric, its comparison and the bound."""

    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Target":
        for op in _OPS:
            metric, sep, bound = text.replace(" ", "").partition(op)
            if sep:
                break
        else:
            raise UsageError(f"a target reads METRIC>=VALUE or METRIC<=VALUE (e.g. psnr>=30), got {text!r}")
        if metric not in METRICS:
            raise UsageError(f"unknown target metric {metric!r}; known: {', '.join(METRICS)}")
        if op != METRICS[metric][0]:
            raise UsageError(f"{metric} is better {'higher' if METRICS[metric][0] == '>=' else 'lower'}: "
                             f"give {metric}{METRICS[metric][0]}VALUE")
        try:
            return cls(metric, op, float(bound))
        except ValueError:
            raise UsageError(f"target bound {bound!r} is not a number") from None

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def score(self, record: dict) -> float | None:
        """The record's value of the metric (PSNR of identical images: inf)."""
        scores = record[METRICS[self.metric][1]]
        if scores is None:
            return None
        value = scores[self.metric]
        return float("inf") if value is None and self.metric == "psnr" else value

    def met(self, record: dict) -> bool:
        return _OPS[self.op](self.score(record), self.bound)

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b``."""
        return a > b if self.op == ">=" else a < b


@dataclass
class TuneResult:
    """What ``tune`` found: ``config`` (None if nothing qualified), its record and the evidence."""

    target: Target
    config: CacheConfig | None
    record: dict | None
    baseline: dict | None  # the fewer-steps run at the config's MACs
    front: list[dict]  # Pareto front of every measured config (MAC speedup against the target's metric)
    records: list[dict] = field(repr=False)  # everything measured, uncached and fewer steps included
    timed: dict | None = None  # with pairs > 0: the config's record with wall times, paired with uncached runs

    @property
    def fewer_steps(self) -> dict | None:
        """The fewest-steps uncached run that meets the target: the plain alternative to any cache."""
        meeting = [r for r in self.records if r["kind"] == "fewer_steps" and self.target.met(r)]
        return min(meeting, key=lambda r: r["steps"], default=None)

    def qualifies(self, record: dict) -> bool:
        return _qualifies(self.target, record, self.records)


def tune(target: Sampler | Any, goal: str | Target, *, call_kwargs: dict | None = None, num_steps: int | None = None,
         methods: Iterable[str] | None = None, fixed: dict[str, Any] | None = None, refine: int = 2,
         pairs: int = 0, seed: int = 0, progress: bool = True) -> TuneResult:
    """The fastest config (by MAC speedup) on ``target`` that meets ``goal`` and beats fewer steps at its speed.

    ``target`` is a diffusers pipeline, called as ``pipe(**call_kwargs, num_inference_steps=...,
    generator=...)`` (your prompts or class labels go in ``call_kwargs``), or a bench Sampler.
    ``goal``: e.g. ``"psnr>=30"``, ``"ssim>=0.95"``, ``"feature_distance<=0.05"`` (against the
    uncached images), or ``"accuracy>=0.9"``/``"frechet<=60"`` (zoo samplers with distribution
    samples). ``methods`` limits the search (default: every method that runs on the model),
    ``fixed`` sets fields in every candidate that has them (e.g. ``{"cooldown": 2}``). ``refine``:
    bisection rounds around the best grid point. ``pairs`` > 0 also times the chosen config in that
    many (uncached, cached) run pairs (``result.timed["speedup_wall"]``).
    """
    goal = goal if isinstance(goal, Target) else Target.parse(goal)
    sampler = target if isinstance(target, Sampler) else pipeline_sampler(target, call_kwargs, num_steps or 25)
    if num_steps is not None:
        sampler.num_steps = num_steps
    if not sampler.measures_quality:
        raise UsageError(f"{sampler.name} has random weights: there is no quality to tune against")
    if METRICS[goal.metric][1] == "distribution" and sampler.distribution is None:
        raise UsageError(f"a {goal.metric} target needs distribution samples (zoo models: --samples N)")
    names = list(methods) if methods is not None else sorted(_all_methods())
    unfit = [(m, reason) for m in names
             if (reason := does_not_apply(sampler, m))]
    if methods is not None and unfit:
        raise UsageError(f"{unfit[0][0]} cannot run on {sampler.name}: {unfit[0][1]}")
    names = [m for m in names if m not in dict(unfit)]
    candidates = [c for m in names for c in grid_configs(m, _fixed_grid(m, fixed or {}),
                                                        sampler.config_defaults.get(m))]
    records = run(sampler, candidates, repeats=0, seed=seed, progress=progress)
    for _ in range(refine):
        # each method's fastest qualifying config, one step closer to the next faster one that fails
        betweens = [c for m in names if (best := _fastest_qualifying(goal, records, m))
                    and (c := _between(goal, best, records)) is not None]
        if not betweens:
            break
        records += [r for r in run(sampler, betweens, repeats=0, seed=seed, progress=progress)
                    if r["kind"] in ("cached", "fewer_steps", "not_run")]
    best = _fastest_qualifying(goal, records)
    config = _config(best) if best else None
    baseline = _baseline(best, records) if best else None
    timed = None
    if config is not None and pairs:
        timed = run(sampler, [config], repeats=pairs, seed=seed, fewer_steps_baseline=False, progress=progress)[1]
    return TuneResult(goal, config, best, baseline, pareto_front(goal, records), records, timed)


def _all_methods() -> list[str]:
    from ..methods import METHODS

    return list(METHODS)


def _fixed_grid(method: str, fixed: dict[str, Any]) -> dict[str, list]:
    from .configs import field_names

    names = field_names(config_class(method))
    return {name: [value] for name, value in fixed.items() if name in names}


def _qualifies(goal: Target, record: dict, records: list[dict]) -> bool:
    if record["kind"] != "cached" or not goal.met(record):
        return False
    baseline = _baseline(record, records)
    return baseline is not None and goal.better(goal.score(record), goal.score(baseline))


def _fastest_qualifying(goal: Target, records: list[dict], method: str | None = None) -> dict | None:
    qualifying = [r for r in records if _qualifies(goal, r, records) and method in (None, r["config"]["method"])]
    return max(qualifying, key=lambda r: (r["speedup_macs"], goal.score(r) * (1 if goal.op == ">=" else -1)),
               default=None)


def _config(record: dict) -> CacheConfig:
    from ..config_files import config_from_record

    return config_from_record(record["config"])


def _between(goal: Target, best: dict, records: list[dict]) -> CacheConfig | None:
    """A config half-way between ``best`` and the slowest faster config of its method that differs from it in
    exactly one numeric field, not measured yet; None if there is none."""
    best_config = _config(best)
    faster = sorted((r for r in records if r["kind"] == "cached" and r["config"]["method"] == best_config.method
                     and r["speedup_macs"] > best["speedup_macs"] and not _qualifies(goal, r, records)),
                    key=lambda r: r["speedup_macs"])
    measured = {r["label"] for r in records}
    for other in faster:
        differing = [k for k in best["config"] if best["config"][k] != other["config"][k]]
        if len(differing) != 1:
            continue
        name = differing[0]
        low, high = best["config"][name], other["config"][name]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            continue
        middle = (low + high) / 2
        if isinstance(low, int) and isinstance(high, int):
            middle = round(middle)
        else:
            middle = float(f"{middle:.6g}")  # 0.15, not 0.15000000000000002: a value a user would write
        if middle in (low, high):
            continue
        candidate = dataclasses.replace(best_config, **{name: middle})
        if describe(candidate) not in measured:
            return candidate
    return None


def pareto_front(goal: Target, records: list[dict]) -> list[dict]:
    """The cached configs no other cached config beats in both MAC speedup and the goal's metric, fastest first."""
    cached = [r for r in records if r["kind"] == "cached" and goal.score(r) is not None]
    sign = 1 if goal.op == ">=" else -1
    front, best = [], float("-inf")
    for record in sorted(cached, key=lambda r: (-r["speedup_macs"], -sign * goal.score(r))):
        if sign * goal.score(record) > best:
            front.append(record)
            best = sign * goal.score(record)
    return front


def evidence_table(result: TuneResult) -> str:
    """The Pareto front as text: speedup, score, the fewer-steps run at that speed, and the verdict."""
    goal = result.target
    rows = [["config", "MAC x", goal.metric, "fewer steps", goal.metric, "verdict"]]
    for record in result.front:
        baseline = _baseline(record, result.records)
        verdict = ("meets target, beats fewer steps" if result.qualifies(record) else
                   "misses target" if not goal.met(record) else
                   "no speedup" if baseline is None else "fewer steps as good")
        if record is result.record:
            verdict = "CHOSEN: " + verdict
        rows.append([record["label"], f"{record['speedup_macs']:.2f}", _score_text(goal, goal.score(record)),
                     "-" if baseline is None else f"{baseline['steps']} steps",
                     "-" if baseline is None else _score_text(goal, goal.score(baseline)), verdict])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 5) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _score_text(goal: Target, value: float) -> str:
    return _psnr_text(value) if goal.metric == "psnr" else f"{value:.4g}"
