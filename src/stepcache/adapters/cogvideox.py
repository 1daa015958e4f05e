"""CogVideoX (CogVideoXTransformer3DModel): expert-adaLN blocks over text and video tokens, joint attention.

A block is ``forward(hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_kwargs)`` (by
keyword) and returns ``(hidden_states, encoder_hidden_states)``: video tokens first, unlike SD3 and FLUX.
``norm1`` (CogVideoXLayerNormZero) modulates both streams and returns their attention gates; the MLP
runs on the text and video tokens concatenated. Text enters through the joint attention: no separate
cross-attention.
"""

from __future__ import annotations

from diffusers import CogVideoXTransformer3DModel

from .base import BLOCKS, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN, SUBLAYERS, TwoStreamAdapter, kwarg


class CogVideoXAdapter(TwoStreamAdapter):
    family = "cogvideox"
    model_classes = (CogVideoXTransformer3DModel,)
    description = "CogVideoX (CogVideoXTransformer3DModel): video DiT, joint text-video attention"
    label = "CogVideoX"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, MODULATED_INPUT, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks)

    def sublayers(self, block):
        return {SELF_ATTN: [block.attn1], FEED_FORWARD: [block.ff]}

    def modulated_input(self, block, args, kwargs):
        hidden, encoder = self.block_state(block, args, kwargs)
        return block.norm1(hidden, encoder, kwarg(args, kwargs, "temb", 2))[0]  # as the block calls it

    def modulation_norm(self, block):
        return block.norm1

    def gated_attention(self, block):
        # attn1 returns (video, text) outputs; norm1's output[2] is the video tokens' gate
        return block.attn1, block.norm1

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        return gate_output[2] * attention_output[0]
