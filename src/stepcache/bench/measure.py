"""Wall time, peak memory and peak cache size of one sampling run.

* Wall time: timed runs after the warm-up, reported as median, min, max and every run
  (CUDA is synchronised around each run so the time covers the GPU work).
* Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory allocated
  before the run; on CPU the resident set size, sampled every ``RSS_POLL_S`` from
  /proc/self/statm (torch's CPU allocator bypasses tracemalloc, and ``ru_maxrss`` only
  ever grows, so neither can tell two runs apart), above the RSS before the run.
* Cache bytes: ``handle.stats()`` reads 0 after a run (caches are freed at run end), so
  the bytes the method holds are read just before every scheduler step; the peak is kept.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import torch

from ..core.hooks import HookSet
from ..methods.base import tensor_bytes

RSS_POLL_S = 0.002
_STATM = "/proc/self/statm"


def time_runs(fn: Callable[[], Any], repeats: int, device: torch.device) -> dict:
    """Median, min, max and every time (s) of ``repeats`` calls of ``fn``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return summarize(times)


def summarize(times: list[float]) -> dict:
    """Median, min, max and every time of a list of run times."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": list(times)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """``with peak_memory(dev) as peak: run()`` then ``peak["bytes"]`` and ``peak["how"]``."""
    result: dict = {"bytes": None, "how": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result.update(bytes=torch.cuda.max_memory_allocated(device) - base, how="cuda max_memory_allocated")
        return
    if not os.path.exists(_STATM):
        result["how"] = "not measured: no /proc/self/statm on this platform"
        yield result
        return
    base = _rss()
    peak = [base]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(RSS_POLL_S):
            peak[0] = max(peak[0], _rss())

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield result
    finally:
        done.set()
        poller.join()
    result.update(bytes=max(peak[0], _rss()) - base, how=f"CPU RSS above start, polled every {RSS_POLL_S}s")


def _rss() -> int:
    with open(_STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_cache_bytes(cache_tensors: Callable[[], Iterable[Any]], scheduler: Any) -> Iterator[dict]:
    """Track the most bytes ``cache_tensors()`` hold at any step boundary of the runs inside."""
    result = {"bytes": 0}
    hooks = HookSet()

    def step(original, *args, **kwargs):
        result["bytes"] = max(result["bytes"], tensor_bytes(cache_tensors()))
        return original(*args, **kwargs)

    hooks.wrap_method(scheduler, "step", step)
    try:
        yield result
    finally:
        hooks.remove()
