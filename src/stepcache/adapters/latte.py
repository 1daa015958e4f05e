"""Latte (LatteTransformer3DModel): spatial and temporal PixArt-style blocks, alternating.

Each spatial block (a BasicTransformerBlock with self-attention, text cross-attention and MLP)
runs on the tokens of one frame, each temporal block (self-attention and MLP) on the tokens of one
position across frames; the model reshapes the tokens between them and adds a temporal position
embedding before the first temporal block. So the blocks are no chain handing one layout on: what a
range of them adds cannot be cached as one residual. Their sublayers can (FORA), and the text enters
only through the spatial blocks' cross-attention (T-GATE).
"""

from __future__ import annotations

from diffusers import LatteTransformer3DModel

from .base import CROSS_ATTENTION, CROSS_ATTN, DIT, FEED_FORWARD, SELF_ATTN, SUBLAYERS, Adapter


class LatteAdapter(Adapter):
    family = "latte"
    model_classes = (LatteTransformer3DModel,)
    description = "Latte (LatteTransformer3DModel): alternating spatial (with text cross-attention) and temporal blocks"
    label = "Latte"
    capabilities = frozenset({DIT, SUBLAYERS, CROSS_ATTENTION})

    def blocks(self):
        """Spatial block i, then temporal block i, as the model runs them."""
        model = self.model
        return [b for pair in zip(model.transformer_blocks, model.temporal_transformer_blocks) for b in pair]

    def sublayers(self, block):
        roles = {SELF_ATTN: [block.attn1], FEED_FORWARD: [block.ff]}
        if block.attn2 is not None:  # spatial blocks only
            roles[CROSS_ATTN] = [block.attn2]
        return roles

    def block_kind(self, block):
        return "spatial" if block.attn2 is not None else "temporal"
