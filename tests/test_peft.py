"""peft LoRA adapters on the layers a method computes itself (adaLN projections) and on attention.

A method must run the model's modules as they are, wrappers included: with a live LoRA the
cached pipeline gives what it gives with the same LoRA merged into the weights (FORA's
gate-only adaLN used to read the base layer's weight rows and drop the LoRA), and a setting
that caches nothing gives the untouched pipeline's output with the adapter bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer

import stepcache
import tiny
from family_pipes import PIPELINES, denoiser, generate, pipeline
from stepcache.adapters import adapter_for
from stepcache.methods import METHODS
from variants import SETTINGS

STEPS = 4
# adaLN projections (DiT, SD3, FLUX blocks; PixArt's shared adaLN-single) and every attention projection
TARGETS = r".*(norm1\.linear|norm1_context\.linear|\.norm\.linear|adaln_single\.linear|to_q|to_k|to_v|to_out\.0|" \
          r"add_q_proj|add_k_proj|add_v_proj|to_add_out)"


def _merge(model) -> None:
    """Fold every LoRA into its base layer and put the plain base layer back in the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())


@pytest.mark.parametrize("family", list(PIPELINES))
def test_a_live_lora_is_cached_as_if_merged_and_the_no_cache_settings_are_exact(family):
    pipe = pipeline(family)
    model = denoiser(pipe)
    methods = [name for name, config in METHODS.items() if config.fits(adapter_for(model).offers)]
    assert methods
    without_lora = generate(pipe, family, STEPS)
    torch.manual_seed(1)
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False), model)
    lora_layers = [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    assert any("to_q" in name for name in lora_layers)
    if family != "unet":
        assert any(name.endswith(".linear") for name in lora_layers)  # an adaLN projection has one
    reference = generate(pipe, family, STEPS)
    assert (reference - without_lora).abs().max() > 1e-3  # the LoRA matters

    live = {}
    for name in methods:
        no_cache, caching = SETTINGS[name]
        with stepcache.cached(pipe, no_cache):
            assert torch.equal(generate(pipe, family, STEPS), reference), name
        with stepcache.cached(pipe, caching) as handle:
            live[name] = generate(pipe, family, STEPS), handle.stats()["cached_step_indices"]
        assert live[name][1], f"{name} cached no step: the comparison below would prove nothing"

    _merge(model)
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    for name in methods:
        with stepcache.cached(pipe, SETTINGS[name][1]) as handle:
            merged = generate(pipe, family, STEPS)
            assert handle.stats()["cached_step_indices"] == live[name][1], name
        tiny.assert_within_rounding(live[name][0], merged, tiny.TINY_RUN_EPS)
