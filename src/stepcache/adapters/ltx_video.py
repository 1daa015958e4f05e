"""LTX-Video (LTXVideoTransformer3DModel): video DiT blocks with a separate text cross-attention.

A block is ``forward(hidden_states, encoder_hidden_states, temb, image_rotary_emb, encoder_attention_mask)``
(by keyword) and returns the video tokens. ``temb`` holds six modulation vectors per sample, added
to the block's ``scale_shift_table``: shift, scale, gate of the self-attention, then of the MLP. The
cross-attention ``attn2`` reads the un-normalised tokens and the text, and is added ungated; the text
enters the blocks nowhere else.
"""

from __future__ import annotations

from diffusers import LTXVideoTransformer3DModel

from .base import (BLOCKS, CROSS_ATTENTION, CROSS_ATTN, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN,
                   SUBLAYERS, Adapter, kwarg)


class LTXVideoAdapter(Adapter):
    family = "ltx_video"
    model_classes = (LTXVideoTransformer3DModel,)
    description = "LTX-Video (LTXVideoTransformer3DModel): video DiT, self-attention, text cross-attention, MLP"
    label = "LTX-Video"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, CROSS_ATTENTION, MODULATED_INPUT, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks)

    def sublayers(self, block):
        return {SELF_ATTN: [block.attn1], CROSS_ATTN: [block.attn2], FEED_FORWARD: [block.ff]}

    @staticmethod
    def _modulation(block, hidden, temb):
        """(shift, scale, gate) of the self-attention and of the MLP, as LTXVideoTransformerBlock.forward forms them."""
        table = block.scale_shift_table
        values = table[None, None].to(temb.device) + temb.reshape(hidden.size(0), temb.size(1), table.shape[0], -1)
        return values.unbind(dim=2)

    def modulated_input(self, block, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        shift, scale = self._modulation(block, hidden, kwarg(args, kwargs, "temb", 2))[:2]
        return block.norm1(hidden) * (1 + scale) + shift

    def modulation_norm(self, block):
        return block.norm1

    def gated_attention(self, block):
        return block.attn1, None  # the gate comes from temb and the block's table, not from a module

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        return attention_output * self._modulation(block, hidden, kwarg(args, kwargs, "temb", 2))[2]
