"""DeepCache on U-Nets: exactness, executed MACs against the schedule, CFG branches, pipelines, errors."""

import ast
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, UNet2DModel

import stepcache
import tiny
from stepcache import DeepCacheConfig
from stepcache.bench.macs import macs_by_module, macs_of
from stepcache.core.schedules import deepcache_reference_full_steps, nonuniform_full_steps, uniform_full_steps


def _skip_unet():
    """A UNet2DModel of skip blocks (NCSN++-style), whose blocks also pass a skip_sample along."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 32, 32),
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
        up_block_types=("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"), norm_num_groups=4,
        attention_head_dim=8,
    ).eval()


UNETS = {
    "unet": (lambda: tiny.unet_condition(levels=3), "unet"),
    "unet2d": (tiny.unet, "unet2d"),
    "skip": (_skip_unet, "unet2d"),
}


def _images(pipe, kwargs, steps=4):
    return pipe(**kwargs, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt").images


def _ddpm_pipeline():
    return DDPMPipeline(unet=tiny.unet(), scheduler=tiny.ddim())


PIPELINES = {
    "sd": (tiny.sd_pipeline, tiny.sd_call_kwargs),
    "sdxl": (tiny.sdxl_pipeline, tiny.sdxl_call_kwargs),
    "ddpm": (_ddpm_pipeline, dict),
}


def _pipeline(name):
    build, call_kwargs = PIPELINES[name]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    return pipe, call_kwargs()


def _without_runs(stats):
    return {k: v for k, v in stats.items() if k != "runs"}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_interval_1_is_bit_identical_to_the_uncached_pipeline(name):
    pipe, kwargs = _pipeline(name)
    reference = _images(pipe, kwargs)
    with stepcache.cached(pipe, DeepCacheConfig(interval=1, branch=0)) as handle:
        images = _images(pipe, kwargs)
        stats = handle.stats()
    assert torch.equal(images, reference)
    assert stats["cached_steps"] == 0 and stats["full_steps"] == 4


@pytest.mark.parametrize("name", list(PIPELINES))
def test_caches_in_real_pipelines_and_remove_restores_exactly(name):
    pipe, kwargs = _pipeline(name)
    reference = _images(pipe, kwargs)
    handle = stepcache.apply(pipe, DeepCacheConfig(interval=3, branch=1))
    images = _images(pipe, kwargs)
    stats = handle.stats()
    handle.remove()
    assert stats["full_step_indices"] == [0, 3] and stats["cached_step_indices"] == [1, 2]
    assert stats["schedule_full_steps"] == [0, 3] and stats["branch"] == 1
    assert not torch.equal(images, reference)  # the cached steps really reused stale deep features
    assert torch.equal(_images(pipe, kwargs), reference)
    assert not any("forward" in module.__dict__ for module in pipe.unet.modules())


def test_each_pipeline_call_starts_afresh():
    pipe, kwargs = _pipeline("sd")
    with stepcache.cached(pipe, DeepCacheConfig(interval=2, branch=0)) as handle:
        first = _images(pipe, kwargs)
        first_stats = handle.stats()
        second = _images(pipe, kwargs)
        second_stats = handle.stats()
    assert torch.equal(first, second)
    assert _without_runs(first_stats) == _without_runs(second_stats)
    assert (first_stats["runs"], second_stats["runs"]) == (1, 2)
    assert second_stats["cache_bytes"] == 0  # freed at the end of the run


def _skipped_module_names(model, branch, layer=None):
    """Module paths (as FlopCounterMode names them) of what a cached step skips: from the cache point
    (``layer`` of level ``branch``; None = the whole level) down, and the up layers that read only that."""
    levels = len(model.down_blocks)
    prefix = type(model).__name__
    down = model.down_blocks[branch]
    layers = len(down.resnets)
    layer = layers if layer is None else layer
    up_index = levels - 1 - branch
    up = model.up_blocks[up_index]
    names = [f"{prefix}.down_blocks.{branch}.resnets.{i}" for i in range(layer, layers)]
    names += [f"{prefix}.down_blocks.{branch}.attentions.{i}"
              for i in range(layer, len(getattr(down, "attentions", None) or []))]
    names += [f"{prefix}.down_blocks.{branch}.downsamplers.0"] if down.downsamplers else []
    deeper = range(branch + 1, levels)
    names += [f"{prefix}.down_blocks.{level}" for level in deeper] + [f"{prefix}.mid_block"]
    names += [f"{prefix}.up_blocks.{levels - 1 - level}" for level in deeper]
    skipped_up = len(up.resnets) - 1 - layer  # up layers before the first one that runs
    names += [f"{prefix}.up_blocks.{up_index}.resnets.{i}" for i in range(skipped_up)]
    names += [f"{prefix}.up_blocks.{up_index}.attentions.{i}" for i in range(skipped_up) if getattr(up, "attentions", None)]
    return names


@pytest.mark.parametrize(
    "unet,branch,config",
    [
        ("unet", 0, {}),
        ("unet", 2, {}),
        ("unet", 0, {"layer": 0}),
        ("unet", 1, {"layer": 1}),
        ("unet", 2, {"layer": 0}),
        ("unet2d", 1, {}),
        ("unet2d", 0, {"layer": 0}),
        ("skip", 0, {}),
        ("unet", 1, {"schedule": "non-uniform", "center": 0.5, "power": 1.4}),
    ],
)
def test_executed_macs_match_the_schedule(unet, branch, config):
    build, family = UNETS[unet]
    model = build()
    steps, interval = 8, 3
    cfg = "batched" if family == "unet" else "none"
    call_batch = 2 if cfg == "batched" else 1
    _, per_module = macs_by_module(lambda: model(**tiny.model_inputs(family, model, batch=call_batch)))
    full_call = per_module["Global"]
    skipped = sum(per_module.get(name, 0) for name in _skipped_module_names(model, branch, config.get("layer")))
    assert 0 < skipped < full_call

    scheduler = tiny.ddim()
    with stepcache.cached(model, DeepCacheConfig(interval=interval, branch=branch, **config), scheduler=scheduler) as h:
        _, executed = macs_of(lambda: tiny.denoise(model, family, scheduler, steps=steps, cfg=cfg))
        stats = h.stats()

    if config.get("schedule"):
        expected_full = nonuniform_full_steps(steps, interval, center=4, power=1.4)
    else:
        expected_full = uniform_full_steps(steps, interval)
    assert stats["full_step_indices"] == expected_full
    cached = steps - len(expected_full)
    predicted = steps * full_call - cached * skipped
    assert abs(executed - predicted) <= 0.01 * predicted


def _deep_feature_source(model, branch):
    levels = len(model.down_blocks)
    return model.mid_block if branch == levels - 1 else model.up_blocks[levels - 2 - branch]


def _output(out):
    return out[0] if isinstance(out, tuple) else out.sample


@pytest.mark.parametrize("unet,branch", [("unet", 0), ("unet", 1), ("unet", 2), ("unet2d", 1), ("skip", 1)])
def test_a_cached_step_runs_the_shallow_path_on_its_own_input_with_the_cached_deep_feature(unet, branch):
    build, family = UNETS[unet]
    model = build()
    first = tiny.model_inputs(family, model, seed=0)
    second = {**first, "sample": tiny.model_inputs(family, model, seed=1)["sample"]}

    # the reference, with plain torch hooks: the uncached U-Net on the second input, deep feature from the first
    source = _deep_feature_source(model, branch)
    captured = []
    hook = source.register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        model(**first)
    hook.remove()
    hook = source.register_forward_hook(lambda module, args, out: captured[0])
    with torch.no_grad():
        expected = _output(model(**second))
    hook.remove()

    scheduler = tiny.ddim()
    with stepcache.cached(model, DeepCacheConfig(interval=2, branch=branch), scheduler=scheduler) as handle:
        scheduler.set_timesteps(2)
        with torch.no_grad():
            full = _output(model(**first))
            scheduler.step(full, scheduler.timesteps[0], first["sample"])
            cached = _output(model(**second))
        assert handle.stats()["cached_step_indices"] == [1]
    assert torch.equal(cached, expected)


def test_split_cfg_keeps_one_cache_per_branch_and_matches_batched_cfg():
    model = tiny.unet_condition(levels=3)
    config = DeepCacheConfig(interval=3, branch=0)
    uncached = tiny.denoise(model, "unet", tiny.ddim(), steps=4, cfg="split")
    results = {}
    for cfg in ("split", "batched"):
        scheduler = tiny.ddim()
        with stepcache.cached(model, config, scheduler=scheduler) as handle:
            results[cfg] = tiny.denoise(model, "unet", scheduler, steps=4, cfg=cfg)
            stats = handle.stats()
        assert stats["steps"] == 4 and stats["cached_step_indices"] == [1, 2]
        assert stats["calls"] == (8 if cfg == "split" else 4)
    # a cache shared between the cond and uncond calls would feed one branch the other's deep features
    # (split and batched CFG differ by float rounding only; a shared cache by about 1e-1)
    tiny.assert_within_rounding(results["split"], results["batched"], tiny.TINY_RUN_EPS)
    assert not torch.allclose(results["split"], uncached, atol=1e-3)


def test_cache_bytes_count_one_deep_feature_per_cfg_branch():
    model = tiny.unet_condition(levels=3)
    inputs = tiny.model_inputs("unet", model)
    captured = []
    hook = _deep_feature_source(model, 1).register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        model(**inputs)
    hook.remove()
    feature_bytes = captured[0].numel() * captured[0].element_size()

    scheduler = tiny.ddim()
    with stepcache.cached(model, DeepCacheConfig(interval=2, branch=1), scheduler=scheduler) as handle:
        scheduler.set_timesteps(4)
        with torch.no_grad():
            model(**inputs)
            assert handle.stats()["cache_bytes"] == feature_bytes
            model(**inputs)  # split CFG: the second call of the same step, with its own cache
        assert handle.stats()["cache_bytes"] == 2 * feature_bytes
        handle.start_run(4)
        with torch.no_grad():
            model(**inputs)
        assert handle.stats()["cache_bytes"] == feature_bytes  # the previous run's caches are gone


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"interval": 0}, r"interval must be an integer in \[1, inf\], got 0"),
        ({"branch": -1}, r"branch must be an integer in \[0, inf\], got -1"),
        ({"schedule": "cosine"}, r"schedule must be one of 'uniform', 'non-uniform', got 'cosine'"),
        ({"schedule": "non-uniform", "power": 1.0}, r"power must be a number in \(1.0, inf\], got 1.0"),
        ({"center": 1.5}, r"center must be a number in \[0.0, 1.0\], got 1.5"),
        ({"center": -2}, r"center must be an integer in \[0, inf\], got -2"),
        ({"interval": 2.5}, r"interval must be an integer"),
    ],
)
def test_bad_parameters_name_the_field_and_the_allowed_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepCacheConfig(**kwargs)


def test_branch_deeper_than_the_unet_is_an_error_naming_its_depth():
    with pytest.raises(ValueError, match=r"branch must be an integer in \[0, 1\] for this U-Net \(2 skip levels\)"):
        stepcache.apply(tiny.unet_condition(levels=2), DeepCacheConfig(branch=2))


def test_only_unets_are_supported():
    with pytest.raises(stepcache.UnsupportedModelError, match="needs a model with U-Net skip levels; DiTTransformer2DModel"):
        stepcache.apply(tiny.dit(), DeepCacheConfig())


def test_non_uniform_schedule_needs_the_run_length():
    model = tiny.unet_condition(levels=3)
    inputs = tiny.model_inputs("unet", model)
    handle = stepcache.apply(model, DeepCacheConfig(schedule="non-uniform", center=0.5))
    with pytest.raises(RuntimeError, match=r"scheduler=.*start_run"):
        model(**inputs)
    handle.start_run(10)
    with torch.no_grad():
        model(**inputs)
    assert handle.stats()["schedule_full_steps"] == nonuniform_full_steps(10, 3, center=5, power=1.4)
    handle.remove()


@pytest.mark.parametrize("cache_branch_id", range(6))
def test_uniform_schedule_matches_the_deepcache_package_at_every_cache_branch_id(cache_branch_id):
    """The DeepCache package (its SD helper) and DeepCacheConfig(branch=b // 3, layer=b % 3) give the same
    images bit for bit. The package counts 3 points per level (SD's 2 layers and the downsampler); the tiny
    U-Net has 1 layer per block, so its layer 2 is the whole level, like layer 1 (the package then still runs
    the level's downsampler, whose output only skipped levels read: the same images)."""
    package = pytest.importorskip("DeepCache")
    pipe, call_kwargs = _pipeline("sd")
    helper = package.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=cache_branch_id)
    helper.enable()
    try:
        expected = _images(pipe, call_kwargs, steps=7)
    finally:
        helper.disable()
    layers = len(pipe.unet.down_blocks[0].resnets)
    config = DeepCacheConfig(interval=3, branch=cache_branch_id // 3, layer=min(cache_branch_id % 3, layers))
    with stepcache.cached(pipe, config) as handle:
        assert torch.equal(_images(pipe, call_kwargs, steps=7), expected)
        assert handle.stats()["cached_step_indices"] == [1, 2, 4, 5]


def test_a_layer_past_the_level_is_an_error_naming_its_layers():
    with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 1\] \(or None: the whole level\)"):
        stepcache.apply(tiny.unet_condition(), DeepCacheConfig(branch=1, layer=2))


def _deepcache_repository_function(name):
    """A function of the DeepCache package's SD pipeline module, run from the installed package's source.

    The module itself imports diffusers names removed since (PositionNet), so it cannot be imported here;
    the schedule function needs only numpy.
    """
    package = pytest.importorskip("DeepCache")
    path = Path(package.__file__).parent / "sd" / "pipeline_stable_diffusion.py"
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": np}
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def _package_non_uniform_steps(steps, interval, center, power):
    """The full steps the package's SD pipeline runs for uniform=False (its __call__, step 7)."""
    sample_from_quad_center = _deepcache_repository_function("sample_from_quad_center")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's ComplexWarning: the package drops the imaginary parts
        indices, _ = sample_from_quad_center(steps, math.ceil(steps / interval), center=center, pow=power)
    return sorted(int(i) for i in indices)


@pytest.mark.parametrize("steps", [10, 12, 25, 50, 100])
@pytest.mark.parametrize("interval", [2, 3, 5])
def test_reference_non_uniform_schedule_is_the_deepcache_packages(steps, interval):
    for center in sorted({0, 1, 3, steps // 4, steps // 3, steps // 2}):
        for power in (1.2, 1.4, 1.6):
            try:
                expected = _package_non_uniform_steps(steps, interval, center, power)
            except ValueError:
                with pytest.raises(ValueError, match="no power"):
                    deepcache_reference_full_steps(steps, interval, center, power)
                continue
            assert deepcache_reference_full_steps(steps, interval, center, power) == expected, (center, power)


def test_the_two_non_uniform_maps_differ_off_center_zero():
    # the example: the package's complex power against stepcache's sign-preserving map
    assert deepcache_reference_full_steps(50, 5, 15, 1.4) == [0, 5, 9, 13, 17, 21, 26, 31, 37, 43]
    assert nonuniform_full_steps(50, 5, 15, 1.4) == [0, 6, 11, 14, 15, 19, 24, 29, 35, 42]
    assert deepcache_reference_full_steps(50, 5, 0, 1.4) == nonuniform_full_steps(50, 5, 0, 1.4)


@pytest.mark.parametrize("steps,config", [
    (50, stepcache.presets.get("deepcache-sd15")),
    (12, DeepCacheConfig(interval=3, branch=1, schedule="non-uniform", center=4, power=1.4, convention="reference")),
])
def test_reference_non_uniform_schedule_matches_the_deepcache_package_bit_for_bit(steps, config):
    """The package's helper (cache_branch_id = 3 * branch + layer) refreshing at the steps the package's own
    non-uniform schedule gives: its helper runs only uniform schedules, and its non-uniform SD pipeline needs
    an older diffusers, so the helper is driven by the pipeline's schedule function."""
    package = pytest.importorskip("DeepCache")
    full_steps = _package_non_uniform_steps(steps, config.interval, config.center, config.power)

    class NonUniformHelper(package.DeepCacheSDHelper):
        def is_skip_step(self, block_i, layer_i, blocktype="down"):
            if self.cur_timestep in full_steps:
                return False
            return super().is_skip_step(block_i, layer_i, blocktype)  # skip_mode non-uniform: the cache point

    pipe, call_kwargs = _pipeline("sd")
    layers = len(pipe.unet.down_blocks[0].resnets)
    layer = layers if config.layer is None else config.layer
    helper = NonUniformHelper(pipe=pipe)
    helper.set_params(cache_interval=config.interval, cache_branch_id=3 * config.branch + layer,
                      skip_mode="non-uniform")
    helper.enable()
    try:
        expected = _images(pipe, call_kwargs, steps=steps)
    finally:
        helper.disable()
    with stepcache.cached(pipe, config) as handle:
        images = _images(pipe, call_kwargs, steps=steps)
        stats = handle.stats()
    assert stats["full_step_indices"] == full_steps
    assert torch.equal(images, expected)
    # stepcache's own map refreshes elsewhere, so the images differ
    with stepcache.cached(pipe, dataclasses.replace(config, convention="stepcache")) as handle:
        assert not torch.equal(_images(pipe, call_kwargs, steps=steps), expected)
        assert handle.stats()["full_step_indices"] != full_steps
