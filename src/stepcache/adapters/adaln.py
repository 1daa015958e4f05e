"""adaLN-Zero modulation that computes only its gates, for steps that reuse a block's sublayers.

An adaLN-Zero layer (DiT, SD3, FLUX) projects the conditioning to shifts, scales and gates.
The shifts and scales only modulate the inputs of the block's attention and MLP; the gates
scale their outputs. On a step where those sublayers all return cached outputs (FORA), the
shift/scale rows (2 of 3 in each layer) are dead work, and reading their weights is most
of what a cached step still costs on memory-bound hardware: DiT-XL/2's adaLN projections
alone hold 220M parameters. The gates still come from the current step's conditioning.

Only the exact diffusers classes below are handled: the chunk layouts are theirs. The gate
rows are sliced out of the projection only while it is a plain ``nn.Linear`` with nothing
around it; wrapped (a peft LoRA, diffusers' offloading or casting hooks, any forward hook),
the projection runs as a module, so whatever wraps it applies, and the gate chunks are taken
from its output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import AdaLayerNormZero, AdaLayerNormZeroSingle
from torch import nn

# class -> (number of chunks of its projection, indices of the gate chunks)
_LAYOUT = {AdaLayerNormZero: (6, (2, 5)), AdaLayerNormZeroSingle: (3, (2,))}


def supports(module: nn.Module) -> bool:
    return type(module) in _LAYOUT


def _plain(linear: nn.Module) -> bool:
    """A bare nn.Linear: its output is exactly F.linear with its own weight, so rows can be sliced."""
    return (type(linear) is nn.Linear and "forward" not in linear.__dict__ and not linear._forward_hooks
            and not linear._forward_pre_hooks)


def _gates(module: nn.Module, emb: torch.Tensor) -> list[torch.Tensor]:
    chunks, gate_indices = _LAYOUT[type(module)]
    emb = module.silu(emb)
    linear = module.linear
    if not _plain(linear):
        projected = linear(emb).chunk(chunks, dim=-1)
        return [projected[i] for i in gate_indices]
    size = linear.out_features // chunks
    weight, bias = linear.weight, linear.bias
    rows = [slice(i * size, (i + 1) * size) for i in gate_indices]  # contiguous row views, no copies
    return [F.linear(emb, weight[r], None if bias is None else bias[r]) for r in rows]


def gates_only(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    """``module(*args, **kwargs)`` in the module's return format, with only the gates computed.

    The normalised input comes back un-normalised and the MLP shift/scale as zeros: the
    caller guarantees nothing that runs reads them.
    """
    if type(module) is AdaLayerNormZeroSingle:
        # forward(x, emb=None) -> (norm(x) * (1 + scale) + shift, gate)
        x, emb = _bind(args, kwargs, ("x", "emb"))
        return x, *_gates(module, emb)
    # AdaLayerNormZero.forward(x, timestep=None, class_labels=None, hidden_dtype=None, emb=None)
    #   -> (modulated x, gate_msa, shift_mlp, scale_mlp, gate_mlp)
    x, timestep, class_labels, hidden_dtype, emb = _bind(
        args, kwargs, ("x", "timestep", "class_labels", "hidden_dtype", "emb")
    )
    if module.emb is not None:  # DiT: each block embeds timestep and class itself
        emb = module.emb(timestep, class_labels, hidden_dtype=hidden_dtype)
    gate_msa, gate_mlp = _gates(module, emb)
    zeros = gate_mlp.new_zeros(()).expand_as(gate_mlp)  # a broadcast view: nothing allocated
    return x, gate_msa, zeros, zeros, gate_mlp


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...]) -> list:
    return [args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(names)]
