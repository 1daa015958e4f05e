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


def macs_by_module(fn: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    """Run ``fn()`` and return (its result, MACs per module path, e.g. "Model.transformer_blocks.3")."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        result = fn()
    by_module = {name: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}
    return result, by_module
