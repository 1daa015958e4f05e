"""HunyuanVideo (HunyuanVideoTransformer3DModel): dual-stream blocks, then single-stream blocks, as FLUX.

Blocks are called positionally, ``(hidden_states, encoder_hidden_states, temb, attention_mask,
image_rotary_emb, ...)``, and both kinds return ``(hidden_states, encoder_hidden_states)``: video tokens
first, unlike FLUX. A single-stream block normalises the video and text tokens concatenated in that
order. The image-to-video variant (``image_condition_type="token_replace"``) has blocks with other
modulation layers: it offers only the blocks and their sublayers.
"""

from __future__ import annotations

import torch
from diffusers import HunyuanVideoTransformer3DModel
from diffusers.models.transformers.transformer_hunyuan_video import (
    HunyuanVideoSingleTransformerBlock,
    HunyuanVideoTokenReplaceSingleTransformerBlock,
)

from . import adaln
from .base import (ADALN_GATES, BLOCKS, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN, SUBLAYERS,
                   TwoStreamAdapter, kwarg)

_SINGLE = (HunyuanVideoSingleTransformerBlock, HunyuanVideoTokenReplaceSingleTransformerBlock)


class HunyuanVideoAdapter(TwoStreamAdapter):
    family = "hunyuan_video"
    model_classes = (HunyuanVideoTransformer3DModel,)
    description = "HunyuanVideo (HunyuanVideoTransformer3DModel): dual-stream then single-stream video blocks"
    label = "HunyuanVideo"
    note = "image-to-video (token-replace blocks): the transformer denoiser, block chain and sublayers only"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, MODULATED_INPUT, ADALN_GATES, GATED_ATTENTION})

    @property
    def offers(self):
        if self.model.config.image_condition_type == "token_replace":  # other modulation layers
            return frozenset({DIT, BLOCKS, SUBLAYERS})
        return super().offers

    def blocks(self):
        return list(self.model.transformer_blocks) + list(self.model.single_transformer_blocks)

    def sublayers(self, block):
        if isinstance(block, _SINGLE):
            # attention and MLP run in parallel and meet in proj_out, which stays live
            return {SELF_ATTN: [block.attn], FEED_FORWARD: [block.proj_mlp]}
        return {SELF_ATTN: [block.attn], FEED_FORWARD: [block.ff, block.ff_context]}

    def gate_modulations(self, block):
        norms = [block.norm] if isinstance(block, _SINGLE) else [block.norm1, block.norm1_context]
        return [m for m in norms if adaln.supports(m)]

    def modulated_input(self, block, args, kwargs):
        hidden, encoder = self.block_state(block, args, kwargs)
        temb = kwarg(args, kwargs, "temb", 2)
        if isinstance(block, _SINGLE):
            return block.norm(torch.cat([hidden, encoder], dim=1), emb=temb)[0]
        return block.norm1(hidden, emb=temb)[0]

    def modulation_norm(self, block):
        # a single-stream block's own call normalises a concatenation of its own: no shared call
        return block.norm if isinstance(block, _SINGLE) else block.norm1

    def gated_attention(self, block):
        # dual: attn returns (video, text) outputs and norm1's output[1] is the video gate; single: none of its own
        return None if isinstance(block, _SINGLE) else (block.attn, block.norm1)

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        return attention_output[0] * gate_output[1].unsqueeze(1)

    def block_kind(self, block):
        return "single" if isinstance(block, _SINGLE) else "dual"
