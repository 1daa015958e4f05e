"""Qwen-Image (QwenImageTransformer2DModel): MMDiT dual-stream blocks over image and text tokens.

Blocks take ``hidden_states``, ``encoder_hidden_states``, ``temb`` and more by keyword and return
``(encoder_hidden_states, hidden_states)``, as SD3 and FLUX do. Each stream's modulation comes from
its own ``img_mod``/``txt_mod`` projection of ``temb``; ``_modulate`` applies it (per token under
``modulate_index``, for edit models whose reference image tokens take another timestep).
"""

from __future__ import annotations

from diffusers import QwenImageTransformer2DModel

from .base import BLOCKS, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN, SUBLAYERS, JointStreamAdapter


class QwenImageAdapter(JointStreamAdapter):
    family = "qwenimage"
    model_classes = (QwenImageTransformer2DModel,)
    description = "Qwen-Image (QwenImageTransformer2DModel): MMDiT joint attention, per-stream MLPs"
    label = "Qwen-Image"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, MODULATED_INPUT, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks)

    def sublayers(self, block):
        return {SELF_ATTN: [block.attn], FEED_FORWARD: [block.img_mlp, block.txt_mlp]}

    def modulated_input(self, block, args, kwargs):
        image_mod1 = block.img_mod(kwargs["temb"]).chunk(2, dim=-1)[0]
        normed = block.img_norm1(kwargs["hidden_states"])
        return block._modulate(normed, image_mod1, kwargs.get("modulate_index"))[0]

    def modulation_norm(self, block):
        return block.img_norm1

    def gated_attention(self, block):
        # attn returns (image, text) outputs; img_mod's output holds the image gate
        return block.attn, block.img_mod

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        image_mod1 = gate_output.chunk(2, dim=-1)[0]
        # _modulate returns (modulated x, gate); its x here is a scalar stand-in: only the gate is used
        gate = block._modulate(image_mod1.new_zeros(()), image_mod1, kwargs.get("modulate_index"))[1]
        return gate * attention_output[0]
