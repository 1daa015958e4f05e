"""U-Nets (UNet2DConditionModel for Stable Diffusion 1.x/2.x/XL, UNet2DModel for DDPM/LDM).

A U-Net has down blocks D_0..D_{n-1}, a mid block and up blocks; diffusers orders
``up_blocks`` deepest first, so the up block at skip level j is ``up_blocks[n-1-j]``.
Level 0 is the shallowest (full resolution).
"""

from __future__ import annotations

from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.attention import BasicTransformerBlock

from .base import CROSS_ATTENTION, CROSS_ATTN, FEED_FORWARD, SELF_ATTN, SKIP_LEVELS, SUBLAYERS, Adapter


class UNetAdapter(Adapter):
    family = "unet"
    model_classes = (UNet2DConditionModel, UNet2DModel)
    description = "U-Net (UNet2DConditionModel: SD 1.x/2.x/XL; UNet2DModel: DDPM/LDM)"
    label = "U-Net"
    # the transformer blocks inside its attention blocks have sublayers, but are no stack a method can skip along
    capabilities = frozenset({SKIP_LEVELS, SUBLAYERS, CROSS_ATTENTION})

    @classmethod
    def capabilities_of(cls, model_class):
        if issubclass(model_class, UNet2DModel):  # DDPM/LDM: no transformer blocks, no text
            return frozenset({SKIP_LEVELS})
        return cls.capabilities

    @property
    def offers(self):
        offered = set(super().offers)
        blocks = self.blocks()
        if not blocks:
            offered -= {SUBLAYERS, CROSS_ATTENTION}
        if not any(block.attn2 is not None for block in blocks):
            offered.discard(CROSS_ATTENTION)
        return frozenset(offered)

    @property
    def num_levels(self) -> int:
        return len(self.model.down_blocks)

    def down_block(self, level: int):
        return self.model.down_blocks[level]

    def up_block(self, level: int):
        return self.model.up_blocks[self.num_levels - 1 - level]

    @property
    def mid_block(self):
        return self.model.mid_block

    def blocks(self):
        """The U-Net's transformer blocks (inside its attention blocks), in execution order."""
        parts = [*self.model.down_blocks, self.model.mid_block, *self.model.up_blocks]
        return [m for part in parts if part is not None for m in part.modules() if isinstance(m, BasicTransformerBlock)]

    def sublayers(self, block):
        roles = {SELF_ATTN: [block.attn1], FEED_FORWARD: [block.ff]}
        if block.attn2 is not None:
            roles[CROSS_ATTN] = [block.attn2]
        return roles
