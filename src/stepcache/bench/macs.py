"""Counting multiply-accumulates (MACs) actually executed, with torch's FlopCounterMode.

torch counts FLOPs of matmuls, convolutions and attention; one MAC is two FLOPs. Its
registry misses the CPU flash-attention kernel that ``scaled_dot_product_attention``
dispatches to on CPU, so that op is added here: without it attention would count as
free on CPU and every method skipping attention would look worse than it is.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop


def _cpu_flash_attention_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop(query, key, value)


_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flop}


def macs_of(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()`` and return (its result, the MACs it executed)."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        result = fn()
    return result, counter.get_total_flops() // 2


def macs_per_step(fn: Callable[[], Any], scheduler: Any) -> tuple[Any, int, list[int]]:
    """Run ``fn()``: (its result, total MACs, MACs up to each ``scheduler.step`` call since the one before).

    One entry per denoising step; the first also holds what ran before the loop (text encoding),
    and MACs after the last step (decoding) only count in the total.
    """
    from ..core.hooks import HookSet

    marks: list[int] = []
    hooks = HookSet()
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:

        def step(original, *args, **kwargs):
            marks.append(counter.get_total_flops() // 2)
            return original(*args, **kwargs)

        hooks.wrap_method(scheduler, "step", step)
        try:
            result = fn()
        finally:
            hooks.remove()
    return result, counter.get_total_flops() // 2, [b - a for a, b in zip([0, *marks], marks)]


def macs_by_module(fn: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    """Run ``fn()`` and return (its result, MACs per module path, e.g. "Model.transformer_blocks.3")."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        result = fn()
    by_module = {name: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}
    return result, by_module
