"""Runs follow the call of the pipeline stepcache was applied to: facts read from the running call,
guidance segments kept apart, and denoisers shared with other pipelines."""

import pytest
import torch
from diffusers import HeunDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

import stepcache
import tiny
import variants
from probe import ProbeConfig


def _sd_latents(pipe, call_kwargs, **kwargs):
    with torch.no_grad():
        return pipe(**call_kwargs, num_inference_steps=5, output_type="latent",
                    generator=torch.Generator().manual_seed(0), **kwargs).images


def _other_prompt(call_kwargs, index):
    """The same call with prompt ``index`` (cond and uncond embeddings) replaced."""
    changed = dict(call_kwargs)
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        changed[key] = call_kwargs[key].clone()
        changed[key][index] = torch.randn(changed[key][index].shape, generator=torch.Generator().manual_seed(99))
    return changed


@pytest.mark.parametrize("name", ["sd-pag-2-prompts", "pixart-sigma-pag-2-prompts"])
def test_tgate_under_pag_keeps_each_prompts_images_to_itself(name):
    variant = next(v for v in variants.VARIANTS if v.name == name)
    pipe = variant.build()
    call_kwargs = variant.kwargs()

    def images(kwargs):
        with torch.no_grad():
            return pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images

    changed = _other_prompt(call_kwargs, 0)
    assert torch.equal(images(call_kwargs)[1], images(changed)[1])  # uncached: image 1 ignores prompt 0
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=0.4)) as handle:
        first = images(call_kwargs)
        assert handle.stats()["cached_steps"] > 0 and handle.stats()["cfg_mode"] == "batched"
        second = images(changed)
    assert not torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_tgate_reads_guidance_from_the_running_call_of_a_pipeline_made_with_from_pipe():
    base = tiny.sd_pipeline()
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(base)  # has never run: no _guidance_scale yet
    img2img.set_progress_bar_config(disable=True)
    call_kwargs = dict(tiny.sd_call_kwargs(batch=2), image=variants._image().expand(2, -1, -1, -1), strength=0.8)
    with stepcache.cached(img2img, stepcache.TGateConfig(gate_step=0.5)) as handle:
        _sd_latents(img2img, call_kwargs)
        assert handle.stats()["cfg_mode"] == "batched"
        # then a call without CFG: two images, each with its own prediction
        alone = _sd_latents(img2img, call_kwargs, guidance_scale=1.0)
        assert handle.stats()["cfg_mode"] == "none"
        changed = _sd_latents(img2img, _other_prompt(call_kwargs, 0), guidance_scale=1.0)
        assert torch.equal(alone[1], changed[1]) and not torch.equal(alone[0], changed[0])
        with pytest.raises(RuntimeError, match="outside that pipeline's call"):
            _sd_latents(base, tiny.sd_call_kwargs())


def test_a_pipeline_sharing_the_denoiser_is_refused_at_its_first_call_and_exact_after_remove():
    pipe = tiny.sd_pipeline()
    other = StableDiffusionPipeline(**{**pipe.components, "scheduler": tiny.ddim()})
    for p in (pipe, other):
        p.set_progress_bar_config(disable=True)
    reference = _sd_latents(other, tiny.sd_call_kwargs())
    denoiser_calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: denoiser_calls.append(1))
    handle = stepcache.apply(pipe, stepcache.DeepCacheConfig(interval=2))
    with pytest.raises(RuntimeError, match="cached by stepcache for a StableDiffusionPipeline"):
        _sd_latents(other, tiny.sd_call_kwargs())
    assert len(denoiser_calls) == 1  # refused at its first denoiser call, before any work
    _sd_latents(pipe, tiny.sd_call_kwargs())
    assert handle.stats()["cached_steps"] > 0
    handle.remove()
    assert torch.equal(_sd_latents(other, tiny.sd_call_kwargs()), reference)


def test_a_partial_schedule_places_fractions_in_the_steps_the_loop_runs():
    pipe = variants._img2img(None)()
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=0.5)) as handle:
        with torch.no_grad():
            pipe(**variants._img2img_kwargs(), generator=torch.Generator().manual_seed(0))  # strength 0.6 of 10
        stats = handle.stats()
    assert stats["num_steps"] == stats["steps"] == 6 and stats["gate_step"] == 3


def test_a_step_is_one_iteration_of_the_loop_also_for_heun():
    """Heun evaluates the model twice per user-facing step: each loop iteration is a step, so a
    fraction of the run is a fraction of the loop's progress."""
    pipe = tiny.sd_pipeline()
    pipe.scheduler = HeunDiscreteScheduler(**variants.BETAS)
    pipe.set_progress_bar_config(disable=True)
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=0.5)) as handle:
        _sd_latents(pipe, tiny.sd_call_kwargs())
        stats = handle.stats()
    assert len(pipe.scheduler.timesteps) == 9  # 5 user-facing steps: 1 + 2 * 4 model evaluations
    assert stats["num_steps"] == stats["steps"] == stats["calls"] == 9 and stats["gate_step"] == 4


def test_sd3_skip_layer_guidance_pass_is_a_branch_of_the_step_not_a_new_run():
    variant = next(v for v in variants.VARIANTS if v.name == "sd3-skip-layer-guidance")
    pipe = variant.build()
    with stepcache.cached(pipe, ProbeConfig()) as handle:
        with torch.no_grad():
            pipe(**variant.kwargs(), generator=torch.Generator().manual_seed(0))
        calls = handle.method.calls
    # steps with i > 5 * 0.2 and i < 5 * 0.8 add a call on the cond half of the batch
    assert [(run, step, branch, batch) for run, step, branch, _, batch in calls] == [
        (1, 0, 0, 2), (1, 1, 0, 2), (1, 2, 0, 2), (1, 2, 1, 1), (1, 3, 0, 2), (1, 3, 1, 1), (1, 4, 0, 2)]


def test_scheduler_is_for_bare_models():
    with pytest.raises(ValueError, match="scheduler= is for a bare model"):
        stepcache.apply(tiny.sd_pipeline(), ProbeConfig(), scheduler=tiny.ddim())
