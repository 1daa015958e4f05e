"""Published settings as named presets: each follows its reference code and runs on its model family."""

import pytest
import torch

import stepcache
import tiny

# preset -> (tiny pipeline, call kwargs) of the family it was published for
FAMILIES = {
    "deepcache": (tiny.sd_pipeline, tiny.sd_call_kwargs),
    "tgate-sdxl": (tiny.sdxl_pipeline, tiny.sdxl_call_kwargs),
    "tgate-pixart": (tiny.pixart_pipeline, tiny.pixart_call_kwargs),
    "fora": (tiny.dit_pipeline, lambda: dict(class_labels=[3])),
    "adacache-moreg": (tiny.wan_pipeline, tiny.wan_call_kwargs),  # MoReg compares a video's frames
    "adacache": (tiny.dit_pipeline, lambda: dict(class_labels=[3])),
    "teacache": (tiny.flux_pipeline, tiny.flux_call_kwargs),
}


def _family(name):
    return next(value for prefix, value in FAMILIES.items() if name.startswith(prefix))


def test_names_and_lookup():
    names = stepcache.presets.names()
    assert names == sorted(stepcache.presets.PRESETS) and {
        "deepcache-sd15", "tgate-sdxl", "tgate-pixart", "adacache-fast", "adacache-slow", "teacache-flux-0.4"} <= set(names)
    for name in names:
        preset = stepcache.presets.PRESETS[name]
        assert stepcache.presets.get(name) == preset.config and preset.config.reference and preset.source
    changed = stepcache.presets.get("teacache-flux-0.4", threshold=0.3, convention="stepcache")
    assert (changed.threshold, changed.convention) == (0.3, "stepcache")
    assert changed.coefficients == stepcache.presets.TEACACHE_FLUX_COEFFICIENTS
    with pytest.raises(ValueError, match=r"unknown preset 'deepcache'; presets: adacache-100, adacache-fast"):
        stepcache.presets.get("deepcache")
    with pytest.raises(TypeError):
        stepcache.presets.get("fora-dit", threshold=0.1)  # FORA has no threshold


def test_published_fields():
    deepcache = stepcache.presets.get("deepcache-sd15")
    assert (deepcache.interval, deepcache.schedule, deepcache.center, deepcache.power, deepcache.branch,
            deepcache.layer) == (5, "non-uniform", 15, 1.4, 0, 0)
    sdxl, pixart = stepcache.presets.get("tgate-sdxl"), stepcache.presets.get("tgate-pixart")
    assert (sdxl.gate_step, sdxl.self_attn_interval, sdxl.self_attn_warmup) == (10, 5, 2)
    assert (pixart.gate_step, pixart.self_attn_interval, pixart.self_attn_warmup) == (15, 3, 2)
    assert stepcache.presets.get("adacache-fast").codebook[0] == (0.08, 6)
    moreg = stepcache.presets.get("adacache-moreg-100")  # configs/sample_adacache_moreg.py, steps from 0
    assert (moreg.moreg, moreg.moreg_strides, moreg.moreg_window, moreg.moreg_norm, moreg.moreg_power,
            moreg.moreg_gradient) == (True, (1,), (9, 89), 0.385, 8.0, 10.0)
    assert moreg.codebook == stepcache.presets.get("adacache-100").codebook
    assert [stepcache.presets.get(f"teacache-flux-{t}").threshold for t in ("0.25", "0.4", "0.6", "0.8")] == \
        [0.25, 0.4, 0.6, 0.8]


@pytest.mark.parametrize("name", stepcache.presets.names())
def test_every_preset_caches_its_family_at_its_published_length(name):
    preset = stepcache.presets.PRESETS[name]
    build, call_kwargs = _family(name)
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    steps = preset.steps
    with stepcache.cached(pipe, preset.config) as handle, torch.no_grad():
        pipe(**call_kwargs(), num_inference_steps=steps, output_type="latent", generator=torch.Generator().manual_seed(0))
        stats = handle.stats()
    assert stats["steps"] == steps and 0 < stats["cached_steps"] < steps
    assert 0 in stats["full_step_indices"]
    if name == "deepcache-sd15":
        assert stats["full_step_indices"] == [0, 5, 9, 13, 17, 21, 26, 31, 37, 43]
    if name == "fora-dit":
        assert stats["full_step_indices"] == [0] + [j for j in range(1, steps) if (steps - 1 - j) % 3 == 0]
