"""FLUX.1 (FluxTransformer2DModel): dual-stream MMDiT blocks followed by single-stream blocks."""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

from . import adaln
from .base import (ADALN_GATES, BLOCKS, DIT, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT, SELF_ATTN, SUBLAYERS,
                   JointStreamAdapter)


class FluxAdapter(JointStreamAdapter):
    family = "flux"
    model_classes = (FluxTransformer2DModel,)
    description = "FLUX.1 (FluxTransformer2DModel): dual-stream then single-stream blocks"
    label = "FLUX"
    capabilities = frozenset({DIT, BLOCKS, SUBLAYERS, MODULATED_INPUT, ADALN_GATES, GATED_ATTENTION})

    def blocks(self):
        return list(self.model.transformer_blocks) + list(self.model.single_transformer_blocks)

    def sublayers(self, block):
        if isinstance(block, FluxSingleTransformerBlock):
            # attention and MLP run in parallel and meet in proj_out, which stays live
            return {SELF_ATTN: [block.attn], FEED_FORWARD: [block.proj_mlp]}
        return {SELF_ATTN: [block.attn], FEED_FORWARD: [block.ff, block.ff_context]}

    def gate_modulations(self, block):
        # single-stream: norm's output feeds attn and proj_mlp; dual: as in SD3, per stream
        norms = [block.norm] if isinstance(block, FluxSingleTransformerBlock) else [block.norm1, block.norm1_context]
        return [m for m in norms if adaln.supports(m)]

    def modulated_input(self, block, args, kwargs):
        hidden = kwargs["hidden_states"]
        if isinstance(block, FluxSingleTransformerBlock):
            # a single-stream block normalises text and image tokens together
            joint = torch.cat([kwargs["encoder_hidden_states"], hidden], dim=1)
            return block.norm(joint, emb=kwargs["temb"])[0]
        return block.norm1(hidden, emb=kwargs["temb"])[0]

    def modulation_norm(self, block):
        # a single-stream block's own call normalises a concatenation of its own: no shared call
        return block.norm if isinstance(block, FluxSingleTransformerBlock) else block.norm1

    def gated_attention(self, block):
        # a single-stream block adds attention and MLP through one projection: no attention output of its own
        return None if isinstance(block, FluxSingleTransformerBlock) else super().gated_attention(block)

    def block_kind(self, block):
        return "single" if isinstance(block, FluxSingleTransformerBlock) else "dual"
