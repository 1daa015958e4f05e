"""The generic path: a diffusers transformer without an adapter of its own, through diffusers' block metadata."""

import pytest
import torch
from diffusers import AuraFlowTransformer2DModel, HunyuanImageTransformer2DModel

import stepcache
import tiny
from stepcache.adapters import BLOCKS, DIT, adapter_for


def test_a_model_whose_blocks_diffusers_describes_gets_the_block_chain_only():
    adapter = adapter_for(tiny.cogview4())
    assert adapter.family == "generic" and adapter.offers == {DIT, BLOCKS}
    assert adapter.blocks() == list(adapter.model.transformer_blocks)


@pytest.mark.parametrize("config,missing", [
    (stepcache.TeaCacheConfig(coefficients=[1.0, 0.0]), "no timestep-modulated block input"),
    (stepcache.FORAConfig(), "no attention/MLP sublayers"),
    (stepcache.TGateConfig(cfg="batched"), "no attention/MLP sublayers and no separate cross-attention"),
    (stepcache.AdaCacheConfig(convention="reference"), "no gated self-attention output"),
])
def test_methods_needing_more_than_the_metadata_says_are_refused_naming_what_is_missing(config, missing):
    with pytest.raises(stepcache.UnsupportedModelError, match=f"CogView4Transformer2DModel \\(generic\\) has {missing}"):
        stepcache.apply(tiny.cogview4(), config)


def test_blocks_in_several_lists_are_refused_with_the_reason():
    torch.manual_seed(0)
    model = HunyuanImageTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, text_embed_dim=tiny.TEXT_DIM, rope_axes_dim=(4, 4))
    with pytest.raises(stepcache.UnsupportedModelError,
                       match=r"no adapter for HunyuanImageTransformer2DModel \(its blocks sit in several lists "
                             r"\(transformer_blocks, single_transformer_blocks\)"):
        stepcache.apply(model, stepcache.DeltaDiTConfig())


def test_blocks_diffusers_does_not_describe_get_no_adapter():
    torch.manual_seed(0)
    model = AuraFlowTransformer2DModel(sample_size=8, num_mmdit_layers=1, num_single_dit_layers=1, attention_head_dim=8,
                                       num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                       pos_embed_max_size=64)
    with pytest.raises(stepcache.UnsupportedModelError,
                       match=r"no adapter for AuraFlowTransformer2DModel; supported denoisers: .*TransformerBlockRegistry"):
        stepcache.apply(model, stepcache.DeltaDiTConfig())
