"""Wan 2.1 / 2.2 (WanTransformer3DModel): video DiT blocks with a separate text cross-attention.

A block is ``forward(hidden_states, encoder_hidden_states, temb, rotary_emb) -> hidden_states``
(the model passes all four positionally). ``temb`` carries six modulation vectors per sample
(or per token in Wan 2.2 TI2V): shift, scale and gate of the self-attention, then of the
MLP, added to the block's own ``scale_shift_table``. The cross-attention ``attn2`` reads the
text (and, in I2V, image) tokens and is added ungated; the text enters the blocks nowhere else.
Wan 2.2 A14B pipelines hold a second model of this class (``transformer_2``) for the
low-noise steps; each gets its own adapter.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel

from .base import (BLOCKS, CROSS_ATTENTION, CROSS_ATTN, DIT, FEED_FORWARD, FRAMES, GATED_ATTENTION, MODULATED_INPUT,
                   SELF_ATTN, SUBLAYERS, Adapter, kwarg)


class WanAdapter(Adapter):
    family = "wan"
    model_classes = (WanTransformer3DModel,)
    description = "Wan 2.1/2.2 (WanTransformer3DModel): video DiT, self-attention, text cross-attention, MLP"
    label = "Wan 2.1/2.2"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, CROSS_ATTENTION, MODULATED_INPUT, GATED_ATTENTION, FRAMES})

    def blocks(self):
        return list(self.model.blocks)

    def sublayers(self, block):
        return {SELF_ATTN: [block.attn1], CROSS_ATTN: [block.attn2], FEED_FORWARD: [block.ffn]}

    @staticmethod
    def _modulation(block, args, kwargs) -> tuple[torch.Tensor, ...]:
        """(shift, scale, gate) of the self-attention and of the MLP, as WanTransformerBlock.forward forms them."""
        temb = kwarg(args, kwargs, "temb", 2)
        if temb.ndim == 4:  # Wan 2.2 TI2V: per-token modulation, (batch, tokens, 6, dim)
            return tuple(c.squeeze(2) for c in (block.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2))
        return (block.scale_shift_table + temb.float()).chunk(6, dim=1)

    def modulated_input(self, block, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        shift, scale = self._modulation(block, args, kwargs)[:2]
        return (block.norm1(hidden.float()) * (1 + scale) + shift).type_as(hidden)

    def modulation_norm(self, block):
        return block.norm1

    def gated_attention(self, block):
        return block.attn1, None  # the gate comes from temb and the block's table, not from a module

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        gate = self._modulation(block, args, kwargs)[2]
        return attention_output * gate

    def token_frames(self, args, kwargs):
        # patch_embedding then flatten(2): the tokens are (frames, height, width)-ordered, p_t frames a token
        return kwarg(args, kwargs, "hidden_states", 0).shape[2] // self.model.config.patch_size[0]
