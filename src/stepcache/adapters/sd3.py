"""Stable Diffusion 3 (SD3Transformer2DModel): MMDiT joint-attention blocks over image and text tokens."""

from __future__ import annotations

from diffusers import SD3Transformer2DModel

from . import adaln
from .base import (ADALN_GATES, BLOCKS, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN, SUBLAYERS,
                   JointStreamAdapter)


class SD3Adapter(JointStreamAdapter):
    family = "sd3"
    model_classes = (SD3Transformer2DModel,)
    description = "Stable Diffusion 3 / 3.5 (SD3Transformer2DModel): MMDiT joint attention"
    label = "SD3"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, MODULATED_INPUT, ADALN_GATES, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks)

    def sublayers(self, block):
        attn = [block.attn] + ([block.attn2] if block.attn2 is not None else [])
        ff = [block.ff] + ([block.ff_context] if block.ff_context is not None else [])
        return {SELF_ATTN: attn, FEED_FORWARD: ff}

    def gate_modulations(self, block):
        # SD3.5's dual-attention norm1 and the last block's continuous context norm are not adaLN-Zero
        return [m for m in (block.norm1, block.norm1_context) if adaln.supports(m)]

    def modulated_input(self, block, args, kwargs):
        return block.norm1(kwargs["hidden_states"], emb=kwargs["temb"])[0]

    def modulation_norm(self, block):
        return block.norm1
