"""Which ranks hold one image's tokens, and the one sum they reduce per adaptive decision.

Under sequence (context) parallelism every rank runs the whole block stack on its own
shard of one image's tokens. An adaptive method (TeaCache, AdaCache) decides from a
statistic of block activations; computed on a shard, it differs per rank, so ranks
would take different decisions, one would skip the blocks and their collectives while
another runs them, and both would hang. So an adaptive method computes its statistic
as exact sums (Σ|Δ|, Σ|previous|), reduces them over the ranks sharing the image, one
collective per decision, and divides only then: every rank gets the single-process
number. A ratio of sums also stays right where a rank holds a whole replica instead of
a shard (each term is counted once per rank on both sides). Static methods (FORA,
Δ-DiT, DeepCache, T-GATE) decide from the step index alone and issue no collectives.

Where the group comes from (``resolve``):
- by default, a model sharded with diffusers' ``enable_parallelism`` (or loaded with
  ``from_pretrained(..., parallel_config=...)``) and a ``ContextParallelConfig``: the
  ring × ulysses mesh its split hooks shard tokens over. A model without
  ``_parallel_config`` is not sharded, whether or not torch.distributed is initialised
  (data parallelism, one image per rank): it never reduces over the whole world.
- ``group=``: a process group (or a 1-D device mesh) of another engine (xDiT, custom).
- ``group=None``: every rank decides alone (each holds whole activations).
Sharding stepcache cannot read (diffusers' tensor parallelism, an unknown parallel config)
refuses adaptive methods; static methods run.

The guard: each reduction carries every rank's step index, its square and a 1, so a
reduction that pairs ranks at different steps (a run of another length, a missed call)
raises ``ShardMismatchError`` on every rank instead of mixing their statistics or
hanging in the next collective of the blocks. Decisions are a function of the reduced
sums and of run state that every rank advances alike, so no second vote is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


class ShardMismatchError(RuntimeError):
    """Ranks that share one image reached a reduction at different steps or in other numbers."""


class UnreadableShardingError(RuntimeError):
    """An adaptive method was applied to a model sharded in a way stepcache cannot reduce over."""


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


AUTO: Any = _Auto()  # group= default: read diffusers' context parallelism from the model


@dataclass(frozen=True)
class Sharding:
    """How the denoiser's activations are split over ranks, as adaptive methods must know it."""

    group: Any = None  # torch.distributed ProcessGroup whose ranks hold one image's shards; None: decide alone
    source: str = "not sharded"  # where it came from, for messages
    unreadable: str | None = None  # why adaptive methods cannot run on this model; None: they can

    @property
    def size(self) -> int:
        return 1 if self.group is None else torch.distributed.get_world_size(self.group)

    def check_adaptive(self, what: str) -> None:
        """Refuse an adaptive method (``what`` names it) on sharding stepcache cannot reduce over."""
        if self.unreadable is not None:
            raise UnreadableShardingError(
                f"{what} decides from block activations, and this model is sharded by {self.unreadable}, which "
                "stepcache cannot reduce over: each rank would decide on its own part and the ranks would hang. "
                "Pass group= the process group whose ranks each hold a part of one image's tokens, or "
                "group=None if every rank holds whole activations; static methods (FORA, Δ-DiT) need neither")

    def sum(self, sums: torch.Tensor, step: int) -> torch.Tensor:
        """``sums`` added over the group's ranks (as they are without a group), in ``sums``' dtype.

        One all-reduce, in float64, with the guard's step fields; every rank of the group must
        call it at the same decision.
        """
        if self.group is None:
            return sums
        guard = torch.tensor([1.0, step, float(step) ** 2], dtype=torch.float64, device=sums.device)
        packed = torch.cat([guard, sums.detach().reshape(-1).to(torch.float64)])
        torch.distributed.all_reduce(packed, group=self.group)
        ranks, steps, squares = packed[:3].tolist()
        size = self.size
        # every rank at the same step s: the sums are size·s and size·s², and size·(size·s²) == (size·s)²
        if ranks != size or size * squares != steps * steps:
            raise ShardMismatchError(
                f"stepcache: the {size} ranks of {self.source} reduced a statistic at different steps (this rank "
                f"at step {step}, the mean step {steps / max(ranks, 1):g}): they ran different numbers of steps or "
                "denoiser calls. Every rank sharing an image must run the same pipeline call")
        return packed[3:].reshape(sums.shape).to(sums.dtype)


NOT_SHARDED = Sharding()


def resolve(model: Any, group: Any = AUTO) -> Sharding:
    """The sharding of ``model`` for ``apply(..., group=group)`` (the module docstring says how)."""
    parallel = parallel_config(model)
    if group is AUTO:
        return _diffusers_sharding(parallel)
    if group is None:
        return Sharding(None, "group=None (every rank decides alone)")
    group = _process_group(group)
    if parallel is not None:
        found = _diffusers_sharding(parallel)
        if found.group is not None and _ranks(found.group) != _ranks(group):
            raise ValueError(f"group= holds ranks {_ranks(group)}, but this model is sharded by {found.source} over "
                             f"ranks {_ranks(found.group)}; leave group= out to use the model's own group")
    if torch.distributed.get_world_size(group) == 1:
        return Sharding(None, "a group of one rank")
    return Sharding(group, f"the group of ranks {_ranks(group)} (group=)")


def parallel_config(model: Any) -> Any:
    """What diffusers' ``enable_parallelism`` records on the model (None before it)."""
    return getattr(model, "_parallel_config", None)


def _diffusers_sharding(parallel: Any) -> Sharding:
    if parallel is None:
        return NOT_SHARDED
    context = getattr(parallel, "context_parallel_config", None)
    if getattr(parallel, "tensor_parallel_config", None) is not None:
        return Sharding(None, "diffusers tensor parallelism", unreadable="diffusers' tensor parallelism")
    mesh = getattr(context, "_flattened_mesh", None)
    if mesh is None:
        return Sharding(None, type(parallel).__name__, unreadable=f"a diffusers {type(parallel).__name__} without a "
                        "context-parallel mesh")
    described = f"diffusers context parallelism (ring {context.ring_degree} × ulysses {context.ulysses_degree})"
    return Sharding(mesh.get_group(), described)


def _process_group(group: Any) -> Any:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError("group= names a process group, and torch.distributed is not initialised")
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(group, DeviceMesh):
        if group.ndim != 1:
            raise ValueError(f"group= takes a 1-D device mesh (the ranks sharing one image's tokens), "
                             f"got {group.ndim} dimensions {group.mesh_dim_names}; pass mesh[name] or mesh._flatten()")
        return group.get_group()
    if not isinstance(group, torch.distributed.ProcessGroup):
        raise TypeError(f"group= takes a torch.distributed ProcessGroup, a 1-D DeviceMesh or None, "
                        f"got {type(group).__name__}")
    return group


def _ranks(group: Any) -> list[int]:
    return torch.distributed.get_process_group_ranks(group)
