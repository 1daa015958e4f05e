"""PixArt-α/Σ (PixArtTransformer2DModel): adaLN-single blocks with text cross-attention."""

from __future__ import annotations

from diffusers import PixArtTransformer2DModel

from .base import (BLOCKS, CROSS_ATTENTION, CROSS_ATTN, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN,
                   SUBLAYERS, Adapter, kwarg)


class PixArtAdapter(Adapter):
    family = "pixart"
    model_classes = (PixArtTransformer2DModel,)
    description = "PixArt-α/Σ (PixArtTransformer2DModel): text-conditioned, adaLN-single, cross-attention"
    label = "PixArt-α/Σ"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, CROSS_ATTENTION, MODULATED_INPUT, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks)

    def sublayers(self, block):
        return {SELF_ATTN: [block.attn1], CROSS_ATTN: [block.attn2], FEED_FORWARD: [block.ff]}

    def modulated_input(self, block, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        timestep = kwarg(args, kwargs, "timestep", 4)
        # the same arithmetic as BasicTransformerBlock's "ada_norm_single" branch
        shift, scale = (block.scale_shift_table[None] + timestep.reshape(hidden.shape[0], 6, -1)).chunk(6, dim=1)[:2]
        return block.norm1(hidden) * (1 + scale) + shift

    def modulation_norm(self, block):
        return block.norm1

    def gated_attention(self, block):
        return block.attn1, None  # the block computes its gates from the timestep itself

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        timestep = kwarg(args, kwargs, "timestep", 4)
        gate = (block.scale_shift_table[None] + timestep.reshape(hidden.shape[0], 6, -1)).chunk(6, dim=1)[2]
        return gate * attention_output
