"""``stepcache.bench.run``: the uncached run, every config, peers and the fewer-steps baseline, measured alike.

Every run uses the same sampler, steps and seed, in one process. Per config: one warm-up
run (its images are the fidelity sample; it counts MACs, per step too, and measures peak
memory and cache bytes), ``repeats`` timed runs, each right after a timed uncached run (the
wall speedup is the median of those pairs' ratios) and, for zoo models, the distribution
scores. Peers (other libraries' caches, ``bench.peers``) are measured the same way; one that
does not apply to the model, or fails, gets a ``peer_not_run`` record with the reason. Each
finished record is written to the results file at once.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from ..adapters import UnsupportedModelError, adapter_for
from ..api import apply, find_denoiser
from ..core.state import RunRecord, StepClock
from ..errors import check_writable
from ..methods.base import CacheConfig
from . import fidelity
from .baseline import baseline_steps, matching_steps
from .configs import as_record, describe
from .executor import SerialExecutor
from .macs import macs_per_step
from .measure import peak_cache_bytes, peak_memory, summarize, time_runs
from .quality import SEED_SETS
from .records import NOT_RUN_KINDS, ResultsFile, run_info
from .samplers import Sampler, pipeline_sampler


def run(
    target: Sampler | Any,
    configs: Iterable[CacheConfig],
    *,
    out: str | Path | None = None,
    plot: str | Path | None = None,
    call_kwargs: dict | None = None,
    num_steps: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    fewer_steps_baseline: bool = True,
    progress: bool = True,
    peers: Iterable[Any] = (),
    executor: Any = None,
) -> list[dict]:
    """Benchmark ``configs`` on ``target`` (a Sampler, or a diffusers pipeline called with ``call_kwargs``).

    ``peers`` are ``bench.peers.PeerConfig``s (``peers.peer_configs()`` gives every peer's grid).
    Returns the records (uncached first, then one per config, one per peer config, then the
    fewer-steps runs, which match stepcache's and the peers' MACs); ``out`` gets them as JSON
    after each one, ``plot`` a speed/quality PNG. A config that cannot run on this model and
    run length (an interval longer than the run, a method for another model family) gets a
    ``not_run`` record with the reason, said on stderr before anything runs, and the rest go on.
    ``repeats=0`` measures MACs and quality only (no timed runs: wall speedups are None).
    ``executor`` (``bench.executor``; default serial) runs the configs' cells, then the fewer-steps
    ones; a parallel one gives every other field as the serial run does and marks each record
    ``wall_comparable: False``: cells that ran side by side shared the machine.
    """
    executor = executor or SerialExecutor()
    sampler = target if isinstance(target, Sampler) else pipeline_sampler(target, call_kwargs, num_steps or 25)
    if num_steps is not None:
        sampler.num_steps = num_steps
    configs, peers = list(configs), list(peers)
    for path in (out, plot):
        if path is not None:
            check_writable(path)
    results = ResultsFile(out, {**run_info(sampler.device), "setup": sampler.setup}) if out else None
    records: list[dict] = []
    reasons = [cannot_run(sampler, config, sampler.num_steps) for config in configs]
    skipped = [not_run_record(config, reason) for config, reason in zip(configs, reasons) if reason is not None]
    configs = [config for config, reason in zip(configs, reasons) if reason is None]
    bar = tqdm(total=1 + len(configs) + len(peers), desc=sampler.name, unit="config", disable=not progress)

    def finish(record: dict) -> None:
        records.append(record)
        if results:
            results.add(record)
        bar.update(1)

    def cells(todo: list[tuple[str, Callable[[Callable[[str], None]], dict]]]) -> None:
        # The one loop over measurements: each cell is (label, measure(status) -> record).
        if executor.parallel:
            bar.set_postfix_str(f"{len(todo)} cell(s) on {executor.name}")
            for record in executor.map([functools.partial(cell, _no_status) for _, cell in todo]):
                finish({**record, "wall_comparable": False})
            return
        for label, cell in todo:
            bar.set_postfix_str(label)
            finish(cell(lambda text, label=label: bar.set_postfix_str(f"{label}: {text}")))

    try:
        for record in skipped:
            bar.write(f"skipped {record['label']}: {record['reason']}", file=sys.stderr)
            records.append(record)
            if results:
                results.add(record)
        cells([("uncached", lambda status: measure(sampler, None, sampler.num_steps, repeats, seed, status=status))])
        reference = records[-1]
        prepared: dict = {}  # one MagCache calibration for all its settings
        cells([(describe(c), lambda status, c=c: measure(sampler, c, sampler.num_steps, repeats, seed, reference,
                                                         status=status)) for c in configs]
              + [(p.label, lambda status, p=p: measure_peer(sampler, p, sampler.num_steps, repeats, seed, reference,
                                                            prepared, status=status)) for p in peers])
        if fewer_steps_baseline:
            cached_records = [r for r in records if r["kind"] in ("cached", "peer")]
            steps_list = baseline_steps(sampler.num_steps, [r["mac_ratio"] for r in cached_records])
            bar.total += len(steps_list)

            def fewer(steps: int, status: Callable[[str], None]) -> dict:
                record = measure(sampler, None, steps, repeats, seed, reference, status=status)
                record["matches"] = [
                    r["label"] for r in cached_records if matching_steps(sampler.num_steps, r["mac_ratio"]) == steps
                ]
                return record

            cells([(f"{steps} steps", lambda status, steps=steps: fewer(steps, status)) for steps in steps_list])
    finally:
        bar.close()
        if plot and any(r["kind"] not in NOT_RUN_KINDS for r in records):
            from .plot import pareto_plot

            pareto_plot(records, plot, title=sampler.name)
    return records


def _no_status(text: str) -> None:
    """A remote cell's progress goes nowhere: the driver's bar counts finished cells."""


# the guidance roles a pipeline call stacks (core/pipeline.py), by the sampler's CFG mode
_LAYOUTS = {"batched": ("uncond", "cond"), "split": ("uncond", "cond"), "none": ("cond",)}


def cannot_run(sampler: Sampler, config: CacheConfig, steps: int) -> str | None:
    """Why ``config`` cannot run on the sampler's model for ``steps`` steps, or None if it can.

    The method's own checks decide, without running the model: it is built on the model's
    adapter (a method for another family refuses there) and told that a run of ``steps``
    starts (an interval or gate step that does not fit the run refuses there). A pipeline
    reports its guidance layout only when called: a method that needs it is told the
    sampler's CFG mode, or, where that is unknown, each layout in turn, and refused only if
    it runs with none.
    """
    pipe = find_denoiser(sampler.target)[1]
    layouts = [None] if pipe is None else [_LAYOUTS[sampler.cfg]] if sampler.cfg in _LAYOUTS else [
        None, *dict.fromkeys(_LAYOUTS.values())]
    reasons = []
    for segments in layouts:
        try:
            method = _build(sampler.target, config)
            method.on_run_start(RunRecord(num_steps=steps, segments=segments))
        except (UnsupportedModelError, ValueError) as reason:
            reasons.append(str(reason))
            continue
        method.on_run_end()
        return None
    return reasons[0]


def does_not_apply(target: Any, method: str, fields: dict | None = None) -> str | None:
    """Why ``method`` does not run on ``target``'s denoiser at all, or None; ``fields`` are what the model needs
    set (a bare model's CFG mode), the rest are the defaults. A Sampler ``target`` gives its own
    ``config_defaults[method]`` as the fields."""
    from ..config_files import config_class

    if isinstance(target, Sampler):
        target, fields = target.target, target.config_defaults.get(method)
    try:
        with warnings.catch_warnings():  # a default config's warnings (TeaCache without coefficients) are not news
            warnings.simplefilter("ignore")
            _build(target, config_class(method)(**(fields or {})))
    except UnsupportedModelError as reason:
        return str(reason)
    return None


def _build(target: Any, config: CacheConfig):
    """The method's live object on ``target``'s denoiser, with no hook installed (as ``apply`` builds it)."""
    model, pipe = find_denoiser(target)
    clock = StepClock(lambda record: None, lambda: None, pipeline_name=None if pipe is None else type(pipe).__name__)
    return config.build(adapter_for(model), clock)


def not_run_record(config: CacheConfig, reason: str) -> dict:
    return {"kind": "not_run", "label": describe(config), "config": as_record(config), "reason": reason}


def measure_peer(sampler: Sampler, config: Any, steps: int, repeats: int, seed: int, reference: dict,
                 prepared: dict | None = None, status: Callable[[str], None] | None = None) -> dict:
    """One record for peer ``config`` (a ``bench.peers.PeerConfig``): measured like a stepcache config,
    or ``peer_not_run`` with the reason it does not apply or failed. ``prepared`` shares one-off
    preparations (MagCache's calibration) between the peers of a run."""
    from . import peers

    not_run = {"kind": "peer_not_run", "label": config.label, "config": config.as_record()}
    info: dict = {}
    try:
        attach, info = peers.measure_setup(sampler, config, steps, seed, prepared)
        return {**measure(sampler, config, steps, repeats, seed, reference, attach=attach, status=status),
                "peer": info}
    except peers.NotApplicable as reason:
        return {**not_run, "reason": f"does not apply: {reason}"}
    except Exception as error:  # another library's code on a pipeline it was not written for: say how it failed
        return {**not_run, "reason": f"failed: {_error_text(error)}", "peer": info}


def _error_text(error: BaseException) -> str:
    import traceback

    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" (at {Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(error).__name__}: {error}{where}"


# a peer's step counts as full where it ran this share of the uncached step's MACs
FULL_STEP_MAC_SHARE = 0.99


def measure(sampler: Sampler, config: Any, steps: int, repeats: int, seed: int,
            reference: dict | None = None, attach: Callable[[], Any] | None = None,
            status: Callable[[str], None] | None = None) -> dict:
    """One record: ``config`` (None: uncached) at ``steps``, compared with the ``reference`` record.

    ``config`` is a stepcache config, or a peer's with ``attach`` installing it (a ``PeerHandle``).
    ``repeats=0`` skips the timed runs (wall times and speedups None). ``status`` hears which run is next.
    """
    status = status or (lambda text: None)
    device = sampler.device
    if attach is None and config is not None:
        attach = lambda: apply(sampler.target, config, scheduler=sampler.scheduler)  # noqa: E731
    handle = attach() if attach else None
    scheduler = sampler.scheduler or sampler.target.scheduler
    try:
        cache_peak = contextlib.nullcontext({"bytes": 0})
        if handle:
            cache_peak = peak_cache_bytes(handle.cache_tensors, scheduler)  # every denoiser's (Wan 2.2: two)
        status("warm-up, MACs, images")
        with peak_memory(device) as memory, cache_peak as cache:  # the warm-up run
            images, macs, step_macs = macs_per_step(lambda: sampler.sample(steps, seed), scheduler)
        stats = handle.stats() if handle else None
        if repeats == 0:
            wall = paired_reference = None
        elif reference is None:
            status(f"{repeats} timed run(s)")
            wall, paired_reference = time_runs(lambda: sampler.sample(steps, seed), repeats, device), None
        else:
            # Alternate reference and measured runs: on a shared host whose speed drifts over minutes,
            # back-to-back pairs see the same speed, where a reference timed once at the start does not.
            reference_times, times = [], []
            for pair in range(repeats):
                status(f"timed pair {pair + 1}/{repeats}")
                if handle:
                    handle.remove()
                    handle = None
                reference_times += time_runs(lambda: sampler.sample(reference["steps"], seed), 1, device)["runs"]
                if attach:
                    handle = attach()
                times += time_runs(lambda: sampler.sample(steps, seed), 1, device)["runs"]
            paired_reference, wall = summarize(reference_times), summarize(times)
        if sampler.distribution:
            status(f"{sampler.distribution.samples} samples x {len(SEED_SETS)} seed sets for accuracy and Fréchet")
        distribution = sampler.distribution.evaluate(steps) if sampler.distribution else None
    finally:
        if handle:
            handle.remove()
    peer = config is not None and not isinstance(config, CacheConfig)
    kind = "peer" if peer else "cached" if config is not None else "uncached" if reference is None else "fewer_steps"
    full_steps, cached_steps = (stats["full_steps"], stats["cached_steps"]) if stats else (steps, 0)
    if peer:  # peers keep no step counts: a step is full where it ran the uncached step's MACs
        full_steps = sum(m >= FULL_STEP_MAC_SHARE * r for m, r in zip(step_macs, reference["step_macs"]))
        cached_steps = steps - full_steps
    record = {
        "kind": kind,
        "label": config.label if peer else describe(config) if config is not None else f"uncached {steps} steps",
        "config": config.as_record() if peer else as_record(config),
        "steps": steps,
        "full_steps": full_steps,
        "cached_steps": cached_steps,
        "wall_s": wall,
        "reference_wall_s": paired_reference,  # the uncached runs timed alternately with these
        "macs": macs,
        "step_macs": step_macs,
        "peak_memory_bytes": memory["bytes"],
        "peak_memory_how": memory["how"],
        "cache_bytes": cache["bytes"],
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(_relative(record, reference))
    record["fidelity"] = _fidelity(sampler, images, reference) if sampler.measures_quality else None
    record["distribution"] = distribution
    record["_images"] = images
    return record


def _relative(record: dict, reference: dict | None) -> dict:
    if reference is None:
        return {"speedup_wall": 1.0, "speedup_macs": 1.0, "mac_ratio": 1.0, "wall_over_mac_speedup": 1.0}
    paired = record.get("reference_wall_s")
    if record["wall_s"] is None:  # not timed (repeats=0)
        speedup_wall = None
    elif paired:  # the median over pairs of (uncached time / this time)
        speedup_wall = statistics.median(r / t for r, t in zip(paired["runs"], record["wall_s"]["runs"]))
    else:
        speedup_wall = reference["wall_s"]["median"] / record["wall_s"]["median"]
    speedup_macs = reference["macs"] / record["macs"]
    return {
        "speedup_wall": speedup_wall,
        "speedup_macs": speedup_macs,
        "mac_ratio": record["macs"] / reference["macs"],
        # the goal: wall-time speedup at least 90% of what the MACs promise
        "wall_over_mac_speedup": None if speedup_wall is None else speedup_wall / speedup_macs,
    }


def _fidelity(sampler: Sampler, images: torch.Tensor, reference: dict | None) -> dict:
    if reference is None:
        return {"psnr": float("inf"), "ssim": 1.0, "feature_distance": 0.0 if sampler.perceptual_trunk else None}
    ref = reference["_images"]
    return {
        "psnr": fidelity.psnr(images, ref),
        "ssim": fidelity.ssim(images, ref),
        "feature_distance": fidelity.feature_distance(sampler.perceptual_trunk, images, ref)
        if sampler.perceptual_trunk is not None else None,
    }
