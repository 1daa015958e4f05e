"""Runs of an applied pipeline: one run per pipeline call, told by the pipeline itself.

The call is wrapped (``HookSet.wrap_call``); while it runs, the scheduler it uses has its
``step`` hooked to close steps, and nothing outside the call is touched. At the first
denoiser call of the call, the run's facts are read from the running pipeline: how many
iterations its loop makes, and which guidance roles it stacks in a batched call.
"""

from __future__ import annotations

import inspect
from typing import Any

from .hooks import HookSet
from .state import GUIDANCE_ROLES, PipelineRunFacts, StepClock, scheduler_steps

_MISSING = object()


class PipelineRuns:
    """Installs the call wrapper on ``pipe`` that opens and closes ``clock``'s runs."""

    def __init__(self, pipe: Any, clock: StepClock) -> None:
        self.pipe = pipe
        self.clock = clock
        self._signature = inspect.signature(type(pipe).__call__)
        self._depth = 0

    def install(self, hooks: HookSet) -> None:
        hooks.wrap_call(self.pipe, self._call)

    def _call(self, original, *args, **kwargs):
        if self._depth:  # the pipeline calling itself: one run
            return original(*args, **kwargs)
        pipe = self.pipe
        scheduler = pipe.scheduler
        step_hooks = HookSet()

        def step(original_step, *a, **k):
            out = original_step(*a, **k)
            self.clock.close_step()
            return out

        # the loop length is read from _num_timesteps only if this call sets it: clear a stale one first
        stale = pipe.__dict__.get("_num_timesteps", _MISSING)
        pipe._num_timesteps = None
        arguments = self._arguments(args, kwargs)
        step_hooks.wrap_method(scheduler, "step", step)
        self._depth += 1
        self.clock.open_call(lambda: self._facts(scheduler, arguments))
        try:
            return original(*args, **kwargs)
        finally:
            self._depth -= 1
            self.clock.close_call()
            step_hooks.remove()
            if pipe.__dict__.get("_num_timesteps", _MISSING) is None:
                if stale is _MISSING:
                    del pipe._num_timesteps
                else:
                    pipe._num_timesteps = stale

    def _arguments(self, args, kwargs) -> dict:
        try:
            bound = self._signature.bind(self.pipe, *args, **kwargs)
        except TypeError:
            return {}  # the pipeline reports its own argument errors
        bound.apply_defaults()
        return bound.arguments

    def _facts(self, scheduler, arguments: dict) -> PipelineRunFacts:
        num_steps = self.pipe.__dict__.get("_num_timesteps")
        if not isinstance(num_steps, int):
            num_steps = scheduler_steps(scheduler)
        return PipelineRunFacts(num_steps=num_steps, segments=self._segments(arguments))

    def _segments(self, arguments: dict) -> tuple[str, ...] | None:
        """The guidance roles stacked in a batched call, as diffusers pipelines order them."""
        cfg = _flag(self.pipe, "do_classifier_free_guidance")
        if cfg is None:
            # PixArt keeps the flag in a local it hands to encode_prompt, DiT (no text) in a local too: both
            # batch CFG when guidance_scale > 1. Elsewhere guidance_scale may be distilled guidance (FLUX).
            encode = getattr(self.pipe, "encode_prompt", None)
            cfg_from_scale = encode is None or "do_classifier_free_guidance" in inspect.signature(encode).parameters
            scale = arguments.get("guidance_scale")
            if not cfg_from_scale or not isinstance(scale, (int, float)):
                return None
            cfg = scale > 1
        pag = bool(_flag(self.pipe, "do_perturbed_attention_guidance"))
        return tuple(role for role, on in zip(GUIDANCE_ROLES, (cfg, True, pag)) if on)


def _flag(pipe: Any, name: str) -> bool | None:
    """A pipeline's boolean property, read on the running call; None if its class has none."""
    if not isinstance(getattr(type(pipe), name, None), property):
        return None
    return bool(getattr(pipe, name))
