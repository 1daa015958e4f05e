"""T-GATE: compute cross-attention only up to a gate step, then reuse it (arXiv 2404.02747).

Before the gate (steps i < m) cross-attention runs every step and self-attention may be
computed only every k steps and reused in between. At the last step before the gate the
cross-attention outputs are cached as the mean of the unconditional and conditional CFG
outputs; from the gate on they are reused and self-attention runs every step (or every
k' steps, reused in between: ``self_attn_interval_after_gate``, T-GATE's ``fi_interval``).
Which steps compute self-attention follows ``core.schedules.tgate_self_attn_reused``; under
``convention="reference"`` it is the tgate package's schedule, whose step before the gate
also carries its self-attention across the gate as the CFG mean.

With one cross-attention output shared by both CFG branches, the branches of a U-Net or
PixArt model get identical inputs everywhere else, so their outputs are identical and
only one is computed, as T-GATE's own pipelines do: under batched CFG the call runs on
the unconditional segment of the batch and its output stands for both; under split CFG
the first call of a step runs and the second returns its output. In SDXL the pooled
text embedding also enters through the time embedding, so the branches still differ
there: T-GATE then feeds only the unconditional inputs (negative pooled embedding and
time ids), and so does this method.

The segments of a batched call are read from the running pipeline (core/pipeline.py):
[uncond; cond] under CFG, [uncond; cond; perturbed] under perturbed-attention guidance
(PAG). PAG's perturbed segment keeps its own cross-attention from the gate step, and
since PAG's attention processors split the batch into its segments, all segments keep
running there (cond with uncond's inputs), so only the cross-attention is saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers.utils import BaseOutput

from ..adapters import CROSS_ATTENTION, CROSS_ATTN, SELF_ATTN, SUBLAYERS
from ..core import validate
from ..core.reuse import ReuseSlot
from ..core.schedules import resolve_step, tgate_self_attn_reused
from . import register
from .base import CacheConfig, CacheMethod, Reply

CFG_MODES = ("auto", "batched", "split", "none")


@register
@dataclass(frozen=True)
class TGateConfig(CacheConfig):
    """T-GATE: cross-attention cached from a gate step on (CFG-averaged), optional self-attention caching before."""

    method: ClassVar[str] = "tgate"
    requires: ClassVar[frozenset[str]] = frozenset({SUBLAYERS, CROSS_ATTENTION})
    default_grids: ClassVar[tuple] = ({"gate_step": [0.7, 0.5, 0.3]},)

    gate_step: int | float = 0.4  # m: index >= 1, or fraction of the run in (0, 1]; the run's length = no gate
    self_attn_interval: int = 1  # k: before the gate, self-attention is computed every k steps (1 = every step)
    self_attn_warmup: int = 0  # steps at the start that always compute self-attention
    # from the gate on, self-attention is computed every k steps and reused in between (T-GATE's fi_interval)
    self_attn_interval_after_gate: int = 1
    # "auto": CFG on/off from the pipeline; bare models name it: "batched", "split" or "none"
    cfg: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        validate.check_step(name, "gate_step", self.gate_step)
        if isinstance(self.gate_step, int):
            validate.check_int(name, "gate_step", self.gate_step, 1)
        else:
            validate.check_float(name, "gate_step", self.gate_step, 0.0, 1.0, low_open=True)
        validate.check_int(name, "self_attn_interval", self.self_attn_interval, 1)
        validate.check_int(name, "self_attn_warmup", self.self_attn_warmup, 0)
        validate.check_int(name, "self_attn_interval_after_gate", self.self_attn_interval_after_gate, 1)
        validate.check_choice(name, "cfg", self.cfg, CFG_MODES)

    def build(self, adapter, clock) -> "TGate":
        return TGate(self, adapter, clock)


class TGate(CacheMethod):
    def __init__(self, config: TGateConfig, adapter, clock) -> None:
        super().__init__(config, adapter, clock)
        if config.cfg == "auto" and clock.pipeline_name is None:
            raise ValueError("TGateConfig(cfg='auto') needs a pipeline to read CFG from; for a bare model "
                             "pass cfg='batched', 'split' or 'none'")
        blocks = adapter.blocks()
        self._self_attn = [m for block in blocks for m in adapter.sublayers(block)[SELF_ATTN]]
        self._cross_attn = [m for block in blocks for m in adapter.sublayers(block).get(CROSS_ATTN, ())]
        self._slots = {SELF_ATTN: ReuseSlot(self._self_attn), CROSS_ATTN: ReuseSlot(self._cross_attn)}
        self._store_into: dict[str, list] = {}  # role -> the list its slot's outputs go to after this call
        self._clear_run()
        self._clear_tensors()

    # -- installation -------------------------------------------------------------------
    def install(self, hooks) -> None:
        for slot in self._slots.values():
            slot.install(hooks)

    # -- runs -----------------------------------------------------------------------------
    def on_run_start(self, record) -> None:
        super().on_run_start(record)
        self._clear_run()
        if record.num_steps is None:
            raise ValueError("T-GATE needs the run's length to place its gate: pass scheduler= to apply() "
                             "or call handle.start_run(num_steps) before a hand-written loop")
        gate = resolve_step(self.config.gate_step, record.num_steps, "gate_step")
        if gate < 1:
            raise ValueError(f"gate_step={self.config.gate_step} falls on step 0 of this {record.num_steps}-step "
                             "run; cross-attention must run at least once before the gate")
        self._gate = gate
        config = self.config
        self._self_reuse = frozenset(s for s in tgate_self_attn_reused(
            record.num_steps, gate, config.self_attn_interval, config.self_attn_warmup,
            config.self_attn_interval_after_gate, config.reference) if not self.must_run_full(s, record.num_steps))
        # a step stores its self-attention when the next step reuses it (reusing steps read the last store)
        self._self_store = frozenset(s for s in range(record.num_steps)
                                     if s not in self._self_reuse and s + 1 in self._self_reuse)
        self._segments = self._run_segments(record.segments)
        self._cfg_on = "uncond" in self._segments

    def _run_segments(self, read: tuple[str, ...] | None) -> tuple[str, ...]:
        """The guidance roles of a batched call this run: read from the pipeline, or named by ``cfg``."""
        cfg = self.config.cfg
        if read is None:
            if cfg == "auto":
                raise ValueError(f"cannot tell whether {self.clock.pipeline_name} runs classifier-free guidance; "
                                 "pass TGateConfig(cfg='batched', 'split' or 'none')")
            return ("cond",) if cfg == "none" else ("uncond", "cond")
        if cfg != "auto" and (cfg == "none") == ("uncond" in read):
            raise ValueError(f"TGateConfig(cfg={cfg!r}), but this {self.clock.pipeline_name} call "
                             f"{'runs' if 'uncond' in read else 'does not run'} classifier-free guidance")
        return read

    def _clear_run(self) -> None:
        self._gate: int | None = None
        self._self_reuse: frozenset[int] = frozenset()
        self._self_store: frozenset[int] = frozenset()
        self._segments: tuple[str, ...] = ()  # guidance roles stacked in a batched call, in batch order
        self._cfg_on = False
        self._mode: str | None = None  # "batched", "split" or "none", known once the gate is reached
        # the call in progress, after the gate: the rows of its output that make the batch (batched CFG), and
        # whether branch 1 of its step takes its output (split CFG)
        self._out_rows: torch.Tensor | None = None
        self._keep_output = False

    def _clear_tensors(self) -> None:
        self._self_cache: dict[int, list] = {}  # branch -> self-attention outputs of its last full step
        self._self_after: list | None = None  # after the gate: the self-attention outputs reused, one call's
        self._cross_at_gate: dict[int, list] = {}  # branch -> cross-attention outputs at step m-1
        self._cross_mean: list | None = None  # the CFG-averaged cross-attention reused after the gate
        self._first_branch_output: Any = None  # split CFG after the gate: the step's output, for branch 1
        for slot in self._slots.values():
            slot.reset()

    def clear(self) -> None:
        self._clear_tensors()

    def cache_tensors(self):
        return (self._self_cache, self._self_after, self._cross_at_gate, self._cross_mean, self._first_branch_output)

    def extra_stats(self) -> dict:
        gate, num_steps = self._gate, self.clock.record.num_steps if self.clock.record else None
        after_gate = [s for s in range(gate, num_steps) if not self.must_run_full(s, num_steps)] \
            if gate is not None and num_steps else []
        return {
            "gate_step": gate,
            "cfg_mode": self._mode,
            "self_attn_reused_steps": sorted(self._self_reuse),
            "cross_attn_reused_steps": after_gate,
            "single_branch_steps": after_gate if self._mode in ("batched", "split") else [],
        }

    # -- denoiser calls -------------------------------------------------------------------
    def before_call(self, ctx, args, kwargs):
        if ctx.step == 0:
            self._check_layout(ctx, args, kwargs)
        # warm-up and cool-down steps after the gate run in full: fresh cross-attention, every branch
        if ctx.step >= self._gate and not self.must_run_full(ctx.step, ctx.num_steps):
            return self._after_gate(ctx, args, kwargs)
        branch = ctx.branch
        if ctx.step in self._self_reuse and branch in self._self_cache:
            self._reuse(SELF_ATTN, self._self_cache[branch])
            self.mark_cached()
        elif ctx.step in self._self_store:  # only kept when a later step will read it
            self._store(SELF_ATTN, self._self_cache.setdefault(branch, [None] * len(self._self_attn)))
        if ctx.step == self._gate - 1:
            self._store(CROSS_ATTN, self._cross_at_gate.setdefault(branch, [None] * len(self._cross_attn)))
        return args, kwargs

    def _reuse(self, role: str, outputs: list) -> None:
        self._slots[role].reuse(dict(enumerate(outputs)))

    def _store(self, role: str, into: list) -> None:
        self._slots[role].store()
        self._store_into[role] = into

    def _check_layout(self, ctx, args, kwargs) -> None:
        """Refuse, in the run's first step (before anything is cached), a call layout T-GATE cannot gate."""
        cfg = self.config.cfg
        split_possible = self._cfg_on and "perturbed" not in self._segments and cfg in ("auto", "split")
        calls = 2 if split_possible else 1
        if ctx.branch >= calls:
            raise RuntimeError(
                f"TGateConfig(cfg={cfg!r}) gates {calls} denoiser call(s) per step stacking {self._segments}, but "
                f"the denoiser was called {ctx.branch + 1} times in step 0; set cfg to match the loop")
        batch = self.adapter.sample_and_timestep(args, kwargs)[0].shape[0]
        if ctx.branch == 0 and not split_possible and batch % len(self._segments):
            raise RuntimeError(f"T-GATE expects each call to stack {len(self._segments)} equal segments "
                               f"{self._segments}, but the batch is {batch}")

    def after_call(self, ctx, output):
        for role, into in self._store_into.items():
            for index, value in self._slots[role].stored().items():
                into[index] = value
        if self._out_rows is not None:  # a batched call after the gate ran the segments it computes
            return _map_tensors(output, lambda t: t[self._out_rows])
        if self._keep_output:
            self._first_branch_output = output
        return output

    def call_ended(self, ctx) -> None:
        self._out_rows, self._keep_output = None, False
        self._store_into = {}
        for slot in self._slots.values():
            slot.reset()

    def _after_gate(self, ctx, args, kwargs):
        if self._cross_mean is None:
            self._close_gate()
        self.mark_cached()
        if self._mode == "split" and ctx.branch == 1:
            output, self._first_branch_output = self._first_branch_output, None
            return Reply(_map_tensors(output, torch.clone))
        if ctx.step in self._self_reuse and self._self_after is not None:
            self._reuse(SELF_ATTN, self._self_after)
        elif ctx.step in self._self_store:
            self._self_after = [None] * len(self._self_attn)
            self._store(SELF_ATTN, self._self_after)
        self._reuse(CROSS_ATTN, self._cross_mean)
        if self._mode == "batched":
            batch = self.adapter.sample_and_timestep(args, kwargs)[0].shape[0]
            rows, self._out_rows = self._rows(batch)
            return _take_rows(args, batch, rows), _take_rows(kwargs, batch, rows)
        self._keep_output = self._mode == "split"  # branch 1 of this step takes this output
        return args, kwargs

    def _sources(self) -> list[int]:
        """Per segment of a batched call, the segment whose inputs it takes after the gate: cond takes
        uncond's (they then get the same cross-attention, so the same output); others keep their own."""
        uncond = self._segments.index("uncond")
        return [uncond if role in ("uncond", "cond") else i for i, role in enumerate(self._segments)]

    def _run_segments_after_gate(self) -> list[int]:
        sources = self._sources()
        if "perturbed" in self._segments:
            # PAG's attention processors split the batch into its segments: every segment must stay
            return sources
        return sorted(set(sources))

    def _rows(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input rows of the call after the gate, rows of its output that make the full batch's output)."""
        per = batch // len(self._segments)
        run = self._run_segments_after_gate()
        positions = list(range(len(run))) if len(run) == len(self._segments) else \
            [run.index(source) for source in self._sources()]
        return _segment_rows(run, per), _segment_rows(positions, per)

    def _close_gate(self) -> None:
        """At the first call after the gate: settle the CFG mode and average the gate's cross-attention."""
        branches = len(self._cross_at_gate)
        if not branches:  # a pipeline's second denoiser (Wan 2.2's transformer_2) taking over after the gate
            raise RuntimeError(
                f"T-GATE's gate is step {self._gate}, but this {type(self.adapter.model).__name__} first ran after it, "
                "so it has no cross-attention from the step before the gate to reuse; with two denoisers "
                "(Wan 2.2), put gate_step after the step where the second takes over")
        mode = ("split" if branches == 2 else "batched") if self._cfg_on else "none"
        if self.config.cfg not in ("auto", mode) or (mode == "none" and branches != 1) or branches > 2:
            raise RuntimeError(f"TGateConfig(cfg={self.config.cfg!r}) but the denoiser was called {branches} "
                               f"time(s) per step{' under CFG' if self._cfg_on else ''}; set cfg to match the loop")
        if mode == "split" and len(self._segments) > 2:
            raise RuntimeError(f"T-GATE cannot gate split CFG calls whose batches stack {self._segments}")
        self._mode = mode
        self._cross_mean = self._at_gate(self._cross_at_gate)
        # the reference's step before the gate stores self-attention (as the CFG mean) when the gate step reuses it
        self._self_after = self._at_gate(self._self_cache) if self._gate - 1 in self._self_store else None
        self._cross_at_gate = {}
        self._self_cache = {}

    def _at_gate(self, outputs: dict[int, list]) -> list:
        """Outputs stored per branch at the step before the gate -> what the single-branch calls after it reuse."""
        if self._mode == "split":
            return [(u + c) / 2 for u, c in zip(outputs[0], outputs[1])]
        if self._mode == "batched":
            return [self._gate_rows(o) for o in outputs[0]]
        return outputs[0]

    def _gate_rows(self, output: torch.Tensor) -> torch.Tensor:
        """One attention output at the gate -> what the calls after it reuse: the CFG mean for the
        uncond/cond segment, its own for any other (PAG's perturbed), for the segments still computed."""
        if output.shape[0] % len(self._segments):
            raise RuntimeError(f"a batched call must stack {len(self._segments)} equal segments "
                               f"{self._segments}, but its batch is {output.shape[0]}")
        chunks = output.chunk(len(self._segments))
        uncond, cond = self._segments.index("uncond"), self._segments.index("cond")
        mean = (chunks[uncond] + chunks[cond]) / 2
        sources = self._sources()
        return torch.cat([mean if sources[s] == uncond else chunks[s] for s in self._run_segments_after_gate()])


def _segment_rows(segments: list[int], per: int) -> torch.Tensor:
    return torch.cat([torch.arange(s * per, (s + 1) * per) for s in segments])


def _take_rows(value, batch: int, rows: torch.Tensor):
    """``value`` with every per-sample tensor (leading dim = batch) reduced to ``rows``."""
    if isinstance(value, torch.Tensor):
        if value.ndim and value.shape[0] == batch:
            return value[rows.to(value.device)]
        return value
    if isinstance(value, dict):
        return {key: _take_rows(item, batch, rows) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_take_rows(item, batch, rows) for item in value)
    return value


def _map_tensors(output, fn):
    """``output`` (a tensor, a tuple, or a diffusers output) with ``fn`` applied to its tensors."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, BaseOutput):
        return type(output)(**{key: _map_tensors(value, fn) for key, value in output.items()})
    if isinstance(output, tuple):
        return tuple(_map_tensors(value, fn) for value in output)
    return output
