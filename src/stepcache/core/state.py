"""Per-run step state: which denoising step and which CFG branch each denoiser call is.

A *run* is one sampling loop (one pipeline call). Inside it, every call of the denoiser
belongs to a *step* and, within the step, to a *branch*: batched classifier-free
guidance makes one call per step (branch 0 holds cond and uncond together), split CFG
makes two calls per step (branches 0 and 1), which must count as one step and keep
separate caches.

Where the steps come from, most reliable first:
- the scheduler: ``set_timesteps`` starts a run and fixes its length, every
  ``scheduler.step`` closes a step. Exact for every diffusers sampling loop, including
  pipelines that rescale the timestep before the model sees it (FLUX passes t / 1000).
- without a scheduler (a model called in a hand-written loop): a call with the same
  timestep as the previous one is another branch of the same step, a smaller timestep
  is the next step, and a larger one starts a new run. The run length is then unknown
  unless given with ``StepClock.start_run(num_steps)``.
In both cases a change of input shape, dtype or device starts a new run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class StepContext:
    """Where one denoiser call sits in its run."""

    run: int  # how many runs this handle has started, counting this one
    step: int  # 0 = first (noisiest) step of the run
    branch: int  # 0 for the first call of a step; 1 for the second call under split CFG
    num_steps: int | None  # steps in this run, None when no scheduler tells

    @property
    def is_last_step(self) -> bool:
        return self.num_steps is not None and self.step == self.num_steps - 1


@dataclass
class RunRecord:
    """What happened in one run, kept until the next run starts (for ``stats()``)."""

    num_steps: int | None
    steps_run: int = 0
    calls: int = 0
    cached_steps: set[int] = field(default_factory=set)

    def full_step_indices(self) -> list[int]:
        return [i for i in range(self.steps_run) if i not in self.cached_steps]


class StepClock:
    """Turns denoiser calls into (run, step, branch) and tells listeners when runs start and end."""

    def __init__(self, on_run_start: Callable[[RunRecord], None], on_run_end: Callable[[], None]) -> None:
        self._on_run_start = on_run_start
        self._on_run_end = on_run_end
        self.runs = 0
        self.record: RunRecord | None = None
        self._scheduler: Any = None
        self._driven_by_scheduler = False
        self._pending_steps: int | None = None  # set_timesteps seen, run starts at the next call
        self._run_open = False
        self._step = 0
        self._branch = -1
        self._step_open = False
        self._last_timestep: float | None = None
        self._signature: tuple | None = None

    # -- scheduler events -------------------------------------------------------------
    def watch_scheduler(self, scheduler: Any, hooks, *, mid_run: bool = False) -> None:
        """Hook ``set_timesteps`` and ``step`` of a diffusers scheduler.

        ``mid_run``: the scheduler was found at a denoiser call (swapped in after apply), so
        its ``set_timesteps`` for this run has already happened: start the run from it.
        """
        self._scheduler = scheduler
        if mid_run and getattr(scheduler, "timesteps", None) is not None:
            self._end_run()
            self._pending_steps = -1

        def set_timesteps(original, *args, **kwargs):
            out = original(*args, **kwargs)
            self._end_run()
            self._pending_steps = -1  # length read at the first call: pipelines may set a begin index
            return out

        def step(original, *args, **kwargs):
            out = original(*args, **kwargs)
            if self._driven_by_scheduler and self._run_open:
                self._close_step()
            return out

        hooks.wrap_method(scheduler, "set_timesteps", set_timesteps)
        hooks.wrap_method(scheduler, "step", step)

    @property
    def scheduler(self) -> Any:
        return self._scheduler

    def start_run(self, num_steps: int | None = None) -> None:
        """Start a run by hand (for loops without a scheduler), optionally with its length."""
        self._end_run()
        self._pending_steps = num_steps if num_steps is not None else 0

    # -- denoiser calls ---------------------------------------------------------------
    def on_call(self, sample: torch.Tensor, timestep: Any) -> StepContext:
        signature = (tuple(sample.shape), sample.dtype, sample.device)
        if self._pending_steps is not None:
            self._begin(signature, self._pending_steps)
        elif not self._run_open or signature != self._signature:
            self._begin(signature, None)
        elif not self._driven_by_scheduler:
            self._advance_by_timestep(_timestep_value(timestep), signature)
        if not self._driven_by_scheduler:
            # only read here: reading a CUDA tensor's value synchronises the device
            self._last_timestep = _timestep_value(timestep)
        if not self._step_open:
            self._step_open = True
            self._branch = -1
            self.record.steps_run = self._step + 1
        self._branch += 1
        self.record.calls += 1
        return StepContext(self.runs, self._step, self._branch, self.record.num_steps)

    def mark_cached(self, step: int) -> None:
        """Record that the method reused cached computation at this step."""
        if self.record is not None:
            self.record.cached_steps.add(step)

    # -- internals --------------------------------------------------------------------
    def _advance_by_timestep(self, t: float | None, signature: tuple) -> None:
        if t is None or self._last_timestep is None or t == self._last_timestep:
            return
        if t < self._last_timestep:
            self._close_step()
        else:
            self._begin(signature, None)

    def _begin(self, signature: tuple, pending: int | None) -> None:
        self._end_run()
        self._driven_by_scheduler = pending == -1
        if self._driven_by_scheduler:
            num_steps = self._scheduler_steps()
        else:
            num_steps = pending or None
        self._pending_steps = None
        self.runs += 1
        self._run_open = True
        self._signature = signature
        self._step = 0
        self._step_open = False
        self._last_timestep = None
        self.record = RunRecord(num_steps=num_steps)
        self._on_run_start(self.record)

    def _scheduler_steps(self) -> int | None:
        timesteps = getattr(self._scheduler, "timesteps", None)
        if timesteps is None:
            return None
        begin = getattr(self._scheduler, "begin_index", None) or 0
        return len(timesteps) - begin

    def _close_step(self) -> None:
        self._step_open = False
        self._step += 1
        if self.record.num_steps is not None and self._step >= self.record.num_steps:
            self._end_run()

    def _end_run(self) -> None:
        if self._run_open:
            self._run_open = False
            self._step_open = False
            self._on_run_end()


def _timestep_value(timestep: Any) -> float | None:
    if timestep is None:
        return None
    if isinstance(timestep, torch.Tensor):
        return float(timestep.reshape(-1)[0]) if timestep.numel() else None
    return float(timestep)
