"""DiT (DiTTransformer2DModel): adaLN-Zero blocks conditioned on timestep and class label."""

from __future__ import annotations

from diffusers import DiTTransformer2DModel

from . import adaln
from .base import (ADALN_GATES, BLOCKS, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN, SUBLAYERS,
                   Adapter, kwarg)


class DiTAdapter(Adapter):
    family = "dit"
    model_classes = (DiTTransformer2DModel,)
    description = "DiT (DiTTransformer2DModel, e.g. DiT-XL/2): class-conditional, adaLN-Zero blocks"
    label = "DiT"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, MODULATED_INPUT, ADALN_GATES, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks)

    def sublayers(self, block):
        return {SELF_ATTN: [block.attn1], FEED_FORWARD: [block.ff]}

    def gate_modulations(self, block):
        # norm1's normalised output feeds only attn1, its MLP shift/scale only ff
        return [block.norm1] if adaln.supports(block.norm1) else []

    def modulated_input(self, block, args, kwargs):
        hidden = self.block_state(block, args, kwargs)[0]
        # BasicTransformerBlock.forward(hidden_states, attention_mask, encoder_hidden_states,
        #   encoder_attention_mask, timestep, cross_attention_kwargs, class_labels)
        timestep = kwarg(args, kwargs, "timestep", 4)
        class_labels = kwarg(args, kwargs, "class_labels", 6)
        return block.norm1(hidden, timestep, class_labels, hidden_dtype=hidden.dtype)[0]

    def modulation_norm(self, block):
        return block.norm1

    def gated_attention(self, block):
        return (block.attn1, block.norm1) if block.norm_type == "ada_norm_zero" else None

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        # BasicTransformerBlock, "ada_norm_zero": norm1 returns (x, gate_msa, shift_mlp, scale_mlp, gate_mlp)
        return gate_output[1].unsqueeze(1) * attention_output
