"""T-GATE: exactness without gating, the gate's CFG average, single-branch steps, MACs, errors."""

import dataclasses

import pytest
import torch

import stepcache
import tiny
from transformer_pipes import assert_each_call_starts_afresh
from stepcache.adapters import CROSS_ATTN, SELF_ATTN, adapter_for
from stepcache.bench.macs import macs_by_module, macs_of
from stepcache.core.hooks import HookSet
from stepcache.core.schedules import tgate_self_attn_reuse_steps, tgate_self_attn_reused

STEPS = 5


PIPELINES = {
    "sd": (tiny.sd_pipeline, tiny.sd_call_kwargs),
    "sdxl": (tiny.sdxl_pipeline, tiny.sdxl_call_kwargs),
    "pixart": (tiny.pixart_pipeline, tiny.pixart_call_kwargs),
}


def _generate(pipe, call_kwargs, guidance_scale=3.0):
    with torch.no_grad():
        return pipe(**call_kwargs(), num_inference_steps=STEPS, guidance_scale=guidance_scale,
                    output_type="latent", generator=torch.Generator().manual_seed(0)).images


def _attn_modules(model, role):
    adapter = adapter_for(model)
    return [m for block in adapter.blocks() for m in adapter.sublayers(block).get(role, ())]


def _module_macs(by_module, model, modules):
    names = {module: f"{type(model).__name__}.{name}" for name, module in model.named_modules()}
    return sum(by_module.get(names[m], 0) for m in modules)


@pytest.mark.parametrize("name", PIPELINES)
def test_gate_at_run_end_is_bit_identical_and_remove_restores(name):
    build, call_kwargs = PIPELINES[name]
    pipe = build()
    reference = _generate(pipe, call_kwargs)
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=STEPS, self_attn_interval=1)) as handle:
        assert torch.equal(_generate(pipe, call_kwargs), reference)
        assert handle.stats()["cached_steps"] == 0
    handle = stepcache.apply(pipe, stepcache.TGateConfig(gate_step=2, self_attn_interval=2))
    assert not torch.equal(_generate(pipe, call_kwargs), reference)
    handle.remove()
    assert torch.equal(_generate(pipe, call_kwargs), reference)


@pytest.mark.parametrize("name,guidance", [("sd", 3.0), ("pixart", 3.0), ("sdxl", 3.0), ("sd", 1.0)])
def test_macs_follow_the_schedule(name, guidance):
    build, call_kwargs = PIPELINES[name]
    pipe = build()
    model = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    _, by_module = macs_by_module(lambda: _generate(pipe, call_kwargs, guidance))
    total = by_module["Global"]
    step_macs = by_module[type(model).__name__] / STEPS  # one step's denoiser call(s)
    self_macs = _module_macs(by_module, model, _attn_modules(model, SELF_ATTN)) / STEPS
    cross_macs = _module_macs(by_module, model, _attn_modules(model, CROSS_ATTN)) / STEPS
    gate, interval = 2, 2
    self_reused = tgate_self_attn_reuse_steps(STEPS, gate, interval, 0)
    after_gate = STEPS - gate
    # after the gate a guided call runs on half the batch, without cross-attention
    post_gate_step = (step_macs - cross_macs) / (2 if guidance > 1 else 1)
    predicted = total - len(self_reused) * self_macs - after_gate * (step_macs - post_gate_step)
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=gate, self_attn_interval=interval)) as handle:
        _, executed = macs_of(lambda: _generate(pipe, call_kwargs, guidance))
        stats = handle.stats()
    assert self_reused and executed < total
    assert abs(executed - predicted) <= 0.01 * predicted
    assert stats["gate_step"] == gate and stats["self_attn_reused_steps"] == self_reused
    assert stats["cross_attn_reused_steps"] == list(range(gate, STEPS))
    assert stats["cfg_mode"] == ("batched" if guidance > 1 else "none")
    assert stats["cached_step_indices"] == sorted(set(self_reused) | set(range(gate, STEPS)))


def test_reused_cross_attention_is_the_cfg_mean_at_the_gate_and_calls_are_halved():
    pipe = tiny.sdxl_pipeline()
    cross = _attn_modules(pipe.unet, CROSS_ATTN)[0]
    seen = {"cross": [], "batch": [], "added": []}
    hooks = [
        cross.register_forward_hook(lambda m, args, out: seen["cross"].append(out)),
        pipe.unet.conv_in.register_forward_pre_hook(lambda m, args: seen["batch"].append(args[0].shape[0])),
        pipe.unet.add_embedding.register_forward_pre_hook(lambda m, args: seen["added"].append(args[0])),
    ]
    gate = 3
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=gate)):
        _generate(pipe, tiny.sdxl_call_kwargs)
    for hook in hooks:
        hook.remove()
    assert seen["batch"] == [2] * gate + [1] * (STEPS - gate)
    uncond, cond = seen["cross"][gate - 1].chunk(2)
    for step in range(gate, STEPS):
        assert torch.equal(seen["cross"][step], (uncond + cond) / 2)
        # T-GATE feeds SDXL's unconditional pooled embedding and time ids after the gate
        assert torch.equal(seen["added"][step], seen["added"][0][:1])
    assert not torch.equal(seen["added"][0][:1], seen["added"][0][1:])


def test_split_and_batched_cfg_agree_and_split_runs_one_branch_after_the_gate():
    results, calls = {}, {}
    for cfg in ("batched", "split"):
        model = tiny.unet_condition()
        counted = []
        model.conv_in.register_forward_pre_hook(lambda m, args: counted.append(1))
        scheduler = tiny.ddim()
        with stepcache.cached(model, stepcache.TGateConfig(gate_step=2, self_attn_interval=2, cfg=cfg),
                              scheduler=scheduler) as handle:
            results[cfg] = tiny.denoise(model, "unet", scheduler, steps=STEPS, cfg=cfg)
            assert handle.stats()["cfg_mode"] == cfg
            assert handle.stats()["single_branch_steps"] == list(range(2, STEPS))
        calls[cfg] = len(counted)
    assert calls == {"batched": STEPS, "split": 2 * 2 + (STEPS - 2)}
    tiny.assert_within_rounding(results["split"], results["batched"], tiny.TINY_RUN_EPS)


def test_split_cfg_branches_keep_their_own_self_attention_cache():
    model, scheduler = tiny.unet_condition(), tiny.ddim()
    results = {}
    for cfg in ("split", "batched"):
        config = stepcache.TGateConfig(gate_step=STEPS, self_attn_interval=2, cfg=cfg)
        with stepcache.cached(model, config, scheduler=scheduler) as handle:
            results[cfg] = tiny.denoise(model, "unet", scheduler, steps=STEPS, cfg=cfg)
            assert handle.stats()["self_attn_reused_steps"] == [1, 3]
    # a shared cache would hand the cond branch the uncond branch's self-attention
    tiny.assert_within_rounding(results["split"], results["batched"], tiny.TINY_RUN_EPS)


def test_each_pipeline_call_starts_afresh():
    assert_each_call_starts_afresh("pixart", stepcache.TGateConfig(gate_step=0.4, self_attn_interval=2), STEPS)


def test_mismatched_cfg_setting_is_an_error():
    model, scheduler = tiny.unet_condition(), tiny.ddim()
    with stepcache.cached(model, stepcache.TGateConfig(gate_step=2, cfg="none"), scheduler=scheduler):
        with pytest.raises(RuntimeError, match="called 2 time"):
            tiny.denoise(model, "unet", scheduler, steps=STEPS, cfg="split")


def test_a_layout_it_cannot_gate_is_refused_in_the_first_step():
    model, scheduler = tiny.unet_condition(), tiny.ddim()
    calls = []
    model.conv_in.register_forward_pre_hook(lambda m, args: calls.append(1))
    inputs = tiny.model_inputs("unet", model, batch=1)
    with stepcache.cached(model, stepcache.TGateConfig(gate_step=2, cfg="split"), scheduler=scheduler):
        scheduler.set_timesteps(STEPS)
        with torch.no_grad(), pytest.raises(RuntimeError, match="called 3 times in step 0"):
            for _ in range(3):  # three guidance passes in one step
                model(**inputs)
    assert len(calls) == 2  # refused before running the third
    with stepcache.cached(model, stepcache.TGateConfig(gate_step=2, cfg="batched"), scheduler=scheduler):
        scheduler.set_timesteps(STEPS)
        with torch.no_grad(), pytest.raises(RuntimeError, match=r"stack 2 equal segments \('uncond', 'cond'\)"):
            model(**tiny.model_inputs("unet", model, batch=3))


@pytest.mark.parametrize("family", ["sd3", "flux", "unet2d"])
def test_models_without_separate_cross_attention_are_refused(family):
    with pytest.raises(stepcache.UnsupportedModelError, match="no separate cross-attention"):
        stepcache.apply(tiny.MODELS[family](), stepcache.TGateConfig(cfg="none"))


def test_run_level_errors():
    model = tiny.unet_condition()
    with pytest.raises(ValueError, match="cfg='batched', 'split' or 'none'"):
        stepcache.apply(model, stepcache.TGateConfig())
    scheduler = tiny.ddim()
    with stepcache.cached(model, stepcache.TGateConfig(gate_step=0.05, cfg="batched"), scheduler=scheduler):
        with pytest.raises(ValueError, match="falls on step 0"):
            tiny.denoise(model, "unet", scheduler, steps=STEPS)
    with stepcache.cached(model, stepcache.TGateConfig(cfg="none")):
        with pytest.raises(ValueError, match="scheduler="):
            model(**tiny.model_inputs("unet", model))


@pytest.mark.parametrize("field,value,allowed", [
    ("gate_step", 0, r"\[1, inf\]"), ("gate_step", 1.5, r"\[0.0, 1.0\]"), ("gate_step", 0.0, r"\(0.0, 1.0\]"),
    ("gate_step", "10", "step index"), ("self_attn_interval", 0, r"\[1, inf\]"),
    ("self_attn_warmup", -1, r"\[0, inf\]"), ("cfg", "both", "'auto', 'batched'"),
    ("self_attn_interval_after_gate", 0, r"\[1, inf\]"), ("convention", "paper", "'stepcache', 'reference'"),
])
def test_bad_parameters_name_the_allowed_range(field, value, allowed):
    with pytest.raises(ValueError, match=f"TGateConfig.{field} must be .*{allowed}"):
        stepcache.TGateConfig(**{field: value})


TGATE_LOADERS = {"sd": "TgateSDLoader", "sdxl": "TgateSDXLLoader", "pixart": "TgatePixArtAlphaLoader"}


def _tgate_package_run(name, steps, config):
    """The tgate package's own pipeline call (a fresh pipeline: the package rewrites its attention forwards)."""
    package = pytest.importorskip("tgate")
    build, call_kwargs = PIPELINES[name]
    pipe = getattr(package, TGATE_LOADERS[name])(build())
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe.tgate(**call_kwargs(), num_inference_steps=steps, guidance_scale=3.0, output_type="latent",
                          generator=torch.Generator().manual_seed(0), gate_step=config.gate_step,
                          sp_interval=config.self_attn_interval, fi_interval=config.self_attn_interval_after_gate,
                          warm_up=config.self_attn_warmup).images


def _stepcache_run(name, steps, config):
    build, call_kwargs = PIPELINES[name]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    with stepcache.cached(pipe, config) as handle, torch.no_grad():
        images = pipe(**call_kwargs(), num_inference_steps=steps, guidance_scale=3.0, output_type="latent",
                      generator=torch.Generator().manual_seed(0)).images
        return images, handle.stats()


@pytest.mark.parametrize("name", PIPELINES)
@pytest.mark.parametrize("steps,config", [
    (25, stepcache.presets.get("tgate-sdxl")),
    (25, stepcache.presets.get("tgate-pixart")),
    # fi_interval 2: the gate step reuses the self-attention the step before it stored as the CFG mean
    (10, stepcache.TGateConfig(gate_step=7, self_attn_interval=3, self_attn_warmup=1, self_attn_interval_after_gate=2,
                               convention="reference")),
])
def test_reference_convention_matches_the_tgate_package_bit_for_bit(name, steps, config):
    expected = _tgate_package_run(name, steps, config)
    images, stats = _stepcache_run(name, steps, config)
    assert torch.equal(images, expected)
    assert stats["self_attn_reused_steps"] == tgate_self_attn_reused(
        steps, config.gate_step, config.self_attn_interval, config.self_attn_warmup,
        config.self_attn_interval_after_gate, reference=True)
    # stepcache's convention counts the self-attention interval from the warm-up: other steps, other images
    assert not torch.equal(_stepcache_run(name, steps, dataclasses.replace(config, convention="stepcache"))[0],
                           expected)


def test_self_attention_schedules_of_both_conventions():
    # the published SDXL setting (25 steps, gate 10, sp_interval 5, warm_up 2)
    assert tgate_self_attn_reused(25, 10, 5, 2, 1, reference=True) == [3, 4, 6, 7, 8]
    assert tgate_self_attn_reused(25, 10, 5, 2, 1) == [3, 4, 5, 6, 8, 9]
    # PixArt's (gate 15, sp_interval 3, warm_up 2)
    assert tgate_self_attn_reused(25, 15, 3, 2, 1, reference=True) == [4, 5, 7, 8, 10, 11, 13]
    # after the gate: every second step from the gate on, or wherever i % 2 == 0 (the package)
    assert tgate_self_attn_reused(10, 5, 1, 0, 2) == [6, 8]
    assert tgate_self_attn_reused(10, 5, 1, 0, 2, reference=True) == [5, 7, 9]


def test_self_attention_interval_after_the_gate_reuses_in_between():
    pipe = tiny.sd_pipeline()
    reference = _generate(pipe, tiny.sd_call_kwargs)
    config = stepcache.TGateConfig(gate_step=2, self_attn_interval_after_gate=2)
    calls = []
    probe = HookSet()  # under stepcache's wrappers: sees only the calls that really compute
    for module in _attn_modules(pipe.unet, SELF_ATTN):
        probe.wrap(module, lambda original, *a, **k: calls.append(1) or original(*a, **k))
    with stepcache.cached(pipe, config) as handle:
        images = _generate(pipe, tiny.sd_call_kwargs)
        stats = handle.stats()
    probe.remove()
    assert stats["self_attn_reused_steps"] == [3]  # steps 2 and 4 compute it (gate 2), step 3 reuses step 2's
    assert len(calls) == len(_attn_modules(pipe.unet, SELF_ATTN)) * (STEPS - 1)
    assert not torch.equal(images, reference)
