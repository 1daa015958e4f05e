"""Per-run step state: which denoising step and which CFG branch each denoiser call is.

A *run* is one sampling loop. Inside it, every call of the denoiser belongs to a *step*
and, within the step, to a *branch*: batched classifier-free guidance makes one call per
step (branch 0 holds every guidance role together), split CFG makes two calls per step
(branches 0 and 1), and extra guidance calls (SD3's skip-layer guidance) are further
branches; branches never share a cache.

A step is one iteration of the sampling loop, which is one ``scheduler.step`` and one
model evaluation per branch. Schedulers that evaluate the model more than once per
user-facing step (Heun, DPM2, PNDM's Runge-Kutta warm-up) iterate their loop over a
longer timestep table, and each iteration is a step: a fraction of a run (T-GATE's
gate, Δ-DiT's boundary) is a fraction of the loop's iterations, i.e. of progress
through the denoising loop, whatever the scheduler.

Where runs and steps come from:
- applied to a pipeline: the run is the pipeline call. It opens when ``__call__`` is
  entered and closes when it returns or raises (an interrupt, a partial schedule, an
  exception: the caches go with the call). Its length is what the pipeline's loop
  iterates (``pipe._num_timesteps``, set by the call; else the scheduler's table from
  its begin index), and each ``scheduler.step`` of the pipeline's scheduler closes a
  step. A denoiser call outside a call of that pipeline is an error.
- a bare model with ``scheduler=``: ``set_timesteps`` starts a run and fixes its
  length, every ``scheduler.step`` closes a step.
- a bare model without a scheduler (a hand-written loop): a call with the same timestep
  as the previous one is another branch of the same step, a smaller timestep is the
  next step, and a larger one starts a new run. The run length is then unknown unless
  given with ``StepClock.start_run(num_steps)``.
For bare models a change of input shape, dtype or device also starts a new run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


GUIDANCE_ROLES = ("uncond", "cond", "perturbed")  # the batch segments diffusers pipelines stack, in order


@dataclass(frozen=True)
class StepContext:
    """Where one denoiser call sits in its run."""

    run: int  # how many runs this handle has started, counting this one
    step: int  # 0 = first (noisiest) step of the run
    branch: int  # 0 for the first call of a step; 1, 2.. for further calls (split CFG, guidance passes)
    num_steps: int | None  # steps in this run, None when nothing tells

    @property
    def is_last_step(self) -> bool:
        return self.num_steps is not None and self.step == self.num_steps - 1


@dataclass
class RunRecord:
    """What happened in one run, kept until the next run starts (for ``stats()``)."""

    num_steps: int | None
    # the guidance roles stacked in a batched call, in batch order (e.g. ("uncond", "cond")), read from the
    # running pipeline; None for a bare model, whose layout only its config can name
    segments: tuple[str, ...] | None = None
    steps_run: int = 0
    calls: int = 0
    cached_steps: set[int] = field(default_factory=set)

    def full_step_indices(self) -> list[int]:
        return [i for i in range(self.steps_run) if i not in self.cached_steps]


@dataclass(frozen=True)
class PipelineRunFacts:
    """What the running pipeline call tells the clock at its first denoiser call."""

    num_steps: int | None
    segments: tuple[str, ...] | None


class StepClock:
    """Turns denoiser calls into (run, step, branch) and tells listeners when runs start and end.

    ``current`` is the context of the denoiser call in progress (None between calls): the
    hooks a method installs on submodules read it there.
    """

    def __init__(self, on_run_start: Callable[[RunRecord], None], on_run_end: Callable[[], None], *,
                 pipeline_name: str | None = None) -> None:
        self._on_run_start = on_run_start
        self._on_run_end = on_run_end
        # set when applied to a pipeline: runs are its calls (open_call / close_call), nothing else
        self.pipeline_name = pipeline_name
        self.runs = 0
        self.record: RunRecord | None = None
        self.current: StepContext | None = None
        self._scheduler: Any = None
        self._driven_by_scheduler = False
        self._pending_steps: int | None = None  # set_timesteps seen, run starts at the next call
        self._call_facts: Callable[[], PipelineRunFacts] | None = None  # set while a pipeline call runs
        self._run_open = False
        self._step = 0
        self._branch = -1
        self._step_open = False
        self._last_timestep: float | None = None
        self._signature: tuple | None = None

    # -- pipeline calls -------------------------------------------------------------------
    def open_call(self, facts: Callable[[], PipelineRunFacts]) -> None:
        """A call of the applied pipeline starts: its first denoiser call starts the run, with ``facts()``."""
        self._end_run()
        self._call_facts = facts

    def close_call(self) -> None:
        """The pipeline call returned or raised: its run ends, whatever its loop did."""
        self._call_facts = None
        self._end_run()
        self.current = None

    def close_step(self) -> None:
        """The pipeline's scheduler finished a step."""
        if self._run_open:
            self._step_open = False
            self._step += 1

    # -- scheduler events (bare models) ---------------------------------------------------
    def watch_scheduler(self, scheduler: Any, hooks) -> None:
        """Hook ``set_timesteps`` and ``step`` of the scheduler of a bare model's loop."""
        self._scheduler = scheduler

        def set_timesteps(original, *args, **kwargs):
            out = original(*args, **kwargs)
            self._end_run()
            self._pending_steps = -1  # length read at the first call: loops may set a begin index
            return out

        def step(original, *args, **kwargs):
            out = original(*args, **kwargs)
            if self._driven_by_scheduler and self._run_open:
                self._close_step()
            return out

        hooks.wrap_method(scheduler, "set_timesteps", set_timesteps)
        hooks.wrap_method(scheduler, "step", step)

    def start_run(self, num_steps: int | None = None) -> None:
        """Start a run by hand (for loops without a scheduler), optionally with its length."""
        self._end_run()
        self._pending_steps = num_steps if num_steps is not None else 0

    # -- denoiser calls ---------------------------------------------------------------
    def on_call(self, sample: torch.Tensor, timestep: Any) -> StepContext:
        if self.pipeline_name is not None:
            self._pipeline_call()
        else:
            self._bare_call(sample, timestep)
        if not self._step_open:
            self._step_open = True
            self._branch = -1
            self.record.steps_run = self._step + 1
        self._branch += 1
        self.record.calls += 1
        self.current = StepContext(self.runs, self._step, self._branch, self.record.num_steps)
        return self.current

    def end_call(self) -> None:
        """The denoiser call in progress returned or raised."""
        self.current = None

    def mark_cached(self, step: int) -> None:
        """Record that the method reused cached computation at this step."""
        if self.record is not None:
            self.record.cached_steps.add(step)

    # -- internals --------------------------------------------------------------------
    def _pipeline_call(self) -> None:
        if self._call_facts is None:
            raise RuntimeError(
                f"this denoiser is cached by stepcache for a {self.pipeline_name}, but was called outside that "
                "pipeline's call (by another pipeline sharing it, e.g. one made with from_pipe, or by hand). "
                "Apply stepcache to the pipeline you call: handle.remove(), then stepcache.apply(that_pipeline, "
                "config); for a hand-written loop, apply to the model with scheduler=")
        if not self._run_open:
            facts = self._call_facts()
            self._begin(None, facts.num_steps, facts.segments)
        elif self.record.num_steps is not None and self._step >= self.record.num_steps:
            raise RuntimeError(
                f"the {self.pipeline_name} called its denoiser for step {self._step} of a run it announced as "
                f"{self.record.num_steps} steps long; stepcache cannot place this call")

    def _bare_call(self, sample: torch.Tensor, timestep: Any) -> None:
        signature = (tuple(sample.shape), sample.dtype, sample.device)
        if self._pending_steps is not None:
            self._driven_by_scheduler = self._pending_steps == -1
            self._begin(signature, scheduler_steps(self._scheduler) if self._driven_by_scheduler else
                        self._pending_steps or None, None)
        elif not self._run_open or signature != self._signature:
            self._driven_by_scheduler = False
            self._begin(signature, None, None)
        elif not self._driven_by_scheduler:
            self._advance_by_timestep(_timestep_value(timestep), signature)
        if not self._driven_by_scheduler:
            # only read here: reading a CUDA tensor's value synchronises the device
            self._last_timestep = _timestep_value(timestep)

    def _advance_by_timestep(self, t: float | None, signature: tuple) -> None:
        if t is None or self._last_timestep is None or t == self._last_timestep:
            return
        if t < self._last_timestep:
            self._close_step()
        else:
            self._begin(signature, None, None)

    def _begin(self, signature: tuple | None, num_steps: int | None, segments: tuple[str, ...] | None) -> None:
        self._end_run()
        self._pending_steps = None
        self.runs += 1
        self._run_open = True
        self._signature = signature
        self._step = 0
        self._step_open = False
        self._last_timestep = None
        self.record = RunRecord(num_steps=num_steps, segments=segments)
        self._on_run_start(self.record)

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


def scheduler_steps(scheduler: Any) -> int | None:
    """Iterations left in a scheduler's timestep table from its begin index (None if it has none)."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:
        return None
    begin = getattr(scheduler, "begin_index", None) or 0
    return len(timesteps) - begin


def _timestep_value(timestep: Any) -> float | None:
    if timestep is None:
        return None
    if isinstance(timestep, torch.Tensor):
        return float(timestep.reshape(-1)[0]) if timestep.numel() else None
    return float(timestep)
