"""Sana (SanaTransformer2DModel): linear-attention DiT blocks with a separate text cross-attention.

A block is ``forward(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
timestep, height, width)`` (the model passes them positionally) and returns the image tokens. The
timestep embedding holds six modulation vectors, added to the block's ``scale_shift_table`` as in
PixArt; the cross-attention ``attn2`` is added ungated, and the text enters the blocks nowhere else.
"""

from __future__ import annotations

from diffusers import SanaTransformer2DModel

from .base import (BLOCKS, CROSS_ATTENTION, CROSS_ATTN, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN,
                   SUBLAYERS, Adapter, kwarg)


class SanaAdapter(Adapter):
    family = "sana"
    model_classes = (SanaTransformer2DModel,)
    description = "Sana (SanaTransformer2DModel): linear-attention DiT, text cross-attention, conv MLP"
    label = "Sana"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, CROSS_ATTENTION, MODULATED_INPUT, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks)

    def sublayers(self, block):
        roles = {SELF_ATTN: [block.attn1], FEED_FORWARD: [block.ff]}
        if block.attn2 is not None:
            roles[CROSS_ATTN] = [block.attn2]
        return roles

    @property
    def offers(self):
        offered = super().offers
        # a Sana without text (cross_attention_dim=None) has no cross-attention
        return offered if all(b.attn2 is not None for b in self.blocks()) else offered - {CROSS_ATTENTION}

    @staticmethod
    def _modulation(block, hidden, timestep):
        """The six (shift, scale, gate) chunks, as SanaTransformerBlock.forward forms them."""
        return (block.scale_shift_table[None] + timestep.reshape(hidden.shape[0], 6, -1)).chunk(6, dim=1)

    def modulated_input(self, block, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        shift, scale = self._modulation(block, hidden, kwarg(args, kwargs, "timestep", 4))[:2]
        return (block.norm1(hidden) * (1 + scale) + shift).to(hidden.dtype)

    def modulation_norm(self, block):
        return block.norm1

    def gated_attention(self, block):
        return block.attn1, None  # the gate comes from the timestep and the block's table, not from a module

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        return self._modulation(block, hidden, kwarg(args, kwargs, "timestep", 4))[2] * attention_output
