"""Where a sweep's independent cells run: here, one after another (the default), or as Ray tasks.

A cell is a function of nothing that returns its result (a bench record, one calibration
seed's distances); cells share no state, so their results do not depend on where or in
which order they run. ``map`` returns them in the order given, so a sweep's output is the
serial one. Each Ray task runs with the driver's torch thread count, so its kernels, and
with them every number but the timings, are the serial run's. Cells that run side by side
share the machine: their wall times are not comparable with each other or with a serial
run, and ``parallel`` says so to whoever records them.

``ray`` is an optional extra (``pip install 'stepcache[ray]'``); ``ray.init()`` starts a
local cluster unless an address names a running one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..errors import UsageError

EXECUTORS = ("serial", "ray")
Cell = Callable[[], Any]


class SerialExecutor:
    """Cells one after another, in this process."""

    name = "serial"
    parallel = False

    def map(self, cells: Sequence[Cell]) -> list:
        return [cell() for cell in cells]

    def close(self) -> None:
        pass


class RayExecutor:
    """Cells as Ray tasks, one CPU each, on a local cluster or the one at ``address``."""

    name = "ray"
    parallel = True

    def __init__(self, address: str | None = None) -> None:
        ray = _import_ray()
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self._ray = ray
        self._task = ray.remote(num_cpus=1)(_run_cell)

    def map(self, cells: Sequence[Cell]) -> list:
        import torch

        threads = torch.get_num_threads()
        return self._ray.get([self._task.remote(cell, threads) for cell in cells])

    def close(self) -> None:
        if self._started:  # a cluster the caller started stays theirs
            self._ray.shutdown()


def check(name: str, address: str | None = None) -> None:
    """UsageError, before any work, for an unknown executor, a missing ray, or an address without ray."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if name == "serial" and address is not None:
        raise UsageError("--ray-address is for --executor ray")
    if name == "ray":
        _import_ray()


def make(name: str = "serial", address: str | None = None) -> SerialExecutor | RayExecutor:
    """The executor called ``name`` (``check`` says what is refused); ray's starts or joins its cluster."""
    check(name, address)
    return SerialExecutor() if name == "serial" else RayExecutor(address)


def _run_cell(cell: Cell, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)  # the driver's: the same kernels, so the same sums
    return cell()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'stepcache[ray]'") from None
    return ray
