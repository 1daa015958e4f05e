"""The diffusers pipeline variants users run, built from tiny components (no downloads).

Each variant is a pipeline and the call a user makes on it; ``tests/test_pipeline_variants.py``
runs every caching method that fits its denoiser through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from diffusers import (
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxImg2ImgPipeline,
    HeunDiscreteScheduler,
    LCMScheduler,
    PixArtSigmaPAGPipeline,
    PixArtSigmaPipeline,
    PNDMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPAGPipeline,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)

import stepcache
import tiny
from stepcache.adapters import ADAPTERS

STEPS = 5
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")  # SD's schedule


# per method: (a setting that caches nothing, a setting that caches in a 5-step run)
SETTINGS = {
    "deepcache": (stepcache.DeepCacheConfig(interval=1), stepcache.DeepCacheConfig(interval=2)),
    "tgate": (stepcache.TGateConfig(gate_step=1.0), stepcache.TGateConfig(gate_step=0.5, self_attn_interval=2)),
    "fora": (stepcache.FORAConfig(interval=1), stepcache.FORAConfig(interval=2)),
    "delta_dit": (stepcache.DeltaDiTConfig(interval=1, num_blocks=1),
                  stepcache.DeltaDiTConfig(interval=2, num_blocks=1)),
    "teacache": (stepcache.TeaCacheConfig(threshold=0.0, coefficients=[1.0, 0.0]),
                 stepcache.TeaCacheConfig(threshold=100.0, coefficients=[1.0, 0.0])),
    "adacache": (stepcache.AdaCacheConfig(codebook=((1e-12, 2),)), stepcache.AdaCacheConfig(codebook=((100.0, 2),))),
}


@dataclass
class Variant:
    name: str
    build: Callable[[], Any]  # -> pipeline
    kwargs: Callable[[], dict]  # -> the call's arguments (the test adds a freshly seeded generator)
    family: str  # of the denoiser the methods hook
    # the call's output, as a tensor: latents where the pipeline can return them
    output: Callable[[Any], torch.Tensor] = field(default=lambda out: _images(out))

    def offers(self) -> frozenset[str]:
        """What the family's adapter offers (the variants' models have every capability of their family)."""
        return next(a for a in ADAPTERS if a.family == self.family).capabilities


def _images(out) -> torch.Tensor:
    images = out.images
    return images if isinstance(images, torch.Tensor) else torch.as_tensor(images)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(seed: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- U-Net pipelines ---------------------------------------------------------------------
def _sd(scheduler=None, **kwargs):
    pipe = tiny.sd_pipeline(**kwargs)
    if scheduler is not None:
        pipe.scheduler = scheduler
    return _quiet(pipe)


def _sd_kwargs(**extra):
    return lambda: dict(tiny.sd_call_kwargs(), num_inference_steps=STEPS, output_type="latent", **extra)


def _img2img(scheduler):
    return lambda: _quiet(StableDiffusionImg2ImgPipeline(**_sd(scheduler).components))


def _img2img_kwargs():
    return dict(tiny.sd_call_kwargs(), image=_image(), strength=0.6, num_inference_steps=10, output_type="latent")


def _inpaint():
    unet = tiny._seeded(lambda: UNet2DConditionModel(
        sample_size=8, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=tiny.TEXT_DIM,
        attention_head_dim=4, norm_num_groups=4))()
    components = tiny.sd_pipeline().components
    return _quiet(StableDiffusionInpaintPipeline(**{**components, "unet": unet}))


def _inpaint_kwargs():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    return dict(tiny.sd_call_kwargs(), image=_image(), mask_image=mask, num_inference_steps=STEPS,
                output_type="latent", height=16, width=16)


def _controlnet():
    controlnet = tiny._seeded(lambda: ControlNetModel(
        in_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=tiny.TEXT_DIM, attention_head_dim=4, norm_num_groups=4,
        conditioning_embedding_out_channels=(4, 8)))()
    return _quiet(StableDiffusionControlNetPipeline(**tiny.sd_pipeline().components, controlnet=controlnet))


def _sd_pag():
    return _quiet(StableDiffusionPAGPipeline(**tiny.sd_pipeline().components, pag_applied_layers=["mid"]))


def _sdxl(cls=None):
    def build():
        pipe = tiny.sdxl_pipeline()
        return _quiet(pipe if cls is None else cls(**pipe.components))
    return build


def _sdxl_kwargs(**extra):
    return lambda: dict(tiny.sdxl_call_kwargs(), num_inference_steps=STEPS, output_type="latent", **extra)


def _edit_latents(pipe, step, timestep, callback_kwargs):
    return {"latents": callback_kwargs["latents"] * 0.99}


def _interrupt_at_2(pipe, step, timestep, callback_kwargs):
    if step == 2:
        pipe._interrupt = True
    return {}


# -- transformer pipelines ---------------------------------------------------------------
def _pixart_sigma(pag: bool):
    def build():
        base = tiny.pixart_pipeline()
        parts = dict(tokenizer=None, text_encoder=None, vae=base.vae, transformer=base.transformer,
                     scheduler=base.scheduler)
        if pag:
            return _quiet(PixArtSigmaPAGPipeline(**parts, pag_applied_layers=["transformer_blocks.1"]))
        return _quiet(PixArtSigmaPipeline(**parts))
    return build


def _pixart_kwargs(batch: int = 1, **extra):
    return lambda: dict(tiny.pixart_call_kwargs(batch=batch), num_inference_steps=STEPS, output_type="latent",
                        **extra)


def _sd3(scheduler=None):
    def build():
        pipe = tiny.sd3_pipeline()
        if scheduler is not None:
            pipe.scheduler = scheduler()
        return _quiet(pipe)
    return build


def _sd3_kwargs(**extra):
    return lambda: dict(tiny.sd3_call_kwargs(), num_inference_steps=STEPS, output_type="latent", **extra)


def _flux(cls=None, **parts):
    def build():
        pipe = tiny.flux_pipeline()
        if cls is None:
            return _quiet(pipe)
        extra = {name: make() for name, make in parts.items()}
        return _quiet(cls(**pipe.components, **extra))
    return build


def _flux_kwargs(**extra):
    return lambda: dict(tiny.flux_call_kwargs(), num_inference_steps=STEPS, output_type="latent", **extra)


def _flux_true_cfg_kwargs():
    g = torch.Generator().manual_seed(11)
    return dict(tiny.flux_call_kwargs(), num_inference_steps=STEPS, output_type="latent", true_cfg_scale=2.0,
                negative_prompt_embeds=tiny._text(1, 5),
                negative_pooled_prompt_embeds=torch.randn(1, tiny.TEXT_DIM, generator=g))


def _flux_controlnet():
    return tiny._seeded(lambda: FluxControlNetModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=tiny.TEXT_DIM, pooled_projection_dim=tiny.TEXT_DIM, axes_dims_rope=(4, 2, 2)))()


def _wan(two_stage: bool = False):
    return lambda: _quiet(tiny.wan_pipeline(two_stage=two_stage))


def _wan_kwargs(steps: int = STEPS, **extra):
    return lambda: dict(tiny.wan_call_kwargs(), num_inference_steps=steps, output_type="latent", **extra)


def _frames(out) -> torch.Tensor:
    return out.frames


def _family(family: str, frames: bool, **extra) -> dict:
    """A variant's build, kwargs and output for a family's tiny pipeline (tests/tiny.py PIPELINES)."""
    build, call_kwargs = tiny.PIPELINES[family]
    return dict(build=lambda: _quiet(build()),
                kwargs=lambda: dict(call_kwargs(), num_inference_steps=STEPS, output_type="latent", **extra),
                family=family, output=_frames if frames else _images)


def _dit_kwargs():
    return dict(class_labels=[1, 2], num_inference_steps=STEPS, output_type="np")


def _flow_dpm():
    return DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)


def _flow_unipc():
    return UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)


VARIANTS = [
    Variant("sd", _sd, _sd_kwargs(), "unet"),
    Variant("sd-img2img-ddim", _img2img(None), _img2img_kwargs, "unet"),
    Variant("sd-img2img-pndm", _img2img(PNDMScheduler(**BETAS, skip_prk_steps=True)), _img2img_kwargs, "unet"),
    Variant("sd-img2img-euler", _img2img(EulerDiscreteScheduler(**BETAS)), _img2img_kwargs, "unet"),
    Variant("sd-inpaint", _inpaint, _inpaint_kwargs, "unet"),
    Variant("sd-controlnet", _controlnet, _sd_kwargs(image=_image(), height=16, width=16), "unet"),
    Variant("sdxl", _sdxl(), _sdxl_kwargs(), "unet"),
    Variant("sdxl-img2img", _sdxl(StableDiffusionXLImg2ImgPipeline),
            lambda: dict(tiny.sdxl_call_kwargs(), image=_image(), strength=0.6, num_inference_steps=10,
                         output_type="latent"), "unet"),
    Variant("sdxl-denoising-end", _sdxl(), _sdxl_kwargs(denoising_end=0.6), "unet"),
    Variant("sd-pag-1-prompt", _sd_pag, _sd_kwargs(pag_scale=2.0), "unet"),
    Variant("sd-pag-2-prompts", _sd_pag,
            lambda: dict(tiny.sd_call_kwargs(batch=2), num_inference_steps=STEPS, output_type="latent", pag_scale=2.0),
            "unet"),
    Variant("sd-2-images-per-prompt", _sd, _sd_kwargs(num_images_per_prompt=2), "unet"),
    Variant("sd-guidance-1", _sd, _sd_kwargs(guidance_scale=1.0), "unet"),
    Variant("sd-guidance-rescale", _sd, _sd_kwargs(guidance_rescale=0.7), "unet"),
    Variant("sd-callback-edits-latents", _sd, _sd_kwargs(callback_on_step_end=_edit_latents), "unet"),
    Variant("sd-interrupt", _sd, _sd_kwargs(callback_on_step_end=_interrupt_at_2), "unet"),
    Variant("sd-ddim", lambda: _sd(DDIMScheduler(**BETAS)), _sd_kwargs(), "unet"),
    Variant("sd-pndm-prk", lambda: _sd(PNDMScheduler(**BETAS)), _sd_kwargs(), "unet"),
    Variant("sd-euler", lambda: _sd(EulerDiscreteScheduler(**BETAS)), _sd_kwargs(), "unet"),
    Variant("sd-euler-a", lambda: _sd(EulerAncestralDiscreteScheduler(**BETAS)),
            _sd_kwargs(), "unet"),
    Variant("sd-dpmpp-karras", lambda: _sd(DPMSolverMultistepScheduler(**BETAS, use_karras_sigmas=True)),
            _sd_kwargs(), "unet"),
    Variant("sd-unipc", lambda: _sd(UniPCMultistepScheduler(**BETAS)), _sd_kwargs(), "unet"),
    Variant("sd-heun", lambda: _sd(HeunDiscreteScheduler(**BETAS)), _sd_kwargs(), "unet"),
    Variant("sd-lcm", lambda: _sd(LCMScheduler(**BETAS)), _sd_kwargs(), "unet"),
    Variant("dit", lambda: _quiet(tiny.dit_pipeline()), _dit_kwargs, "dit"),
    Variant("pixart-alpha", lambda: _quiet(tiny.pixart_pipeline()), _pixart_kwargs(), "pixart"),
    Variant("pixart-sigma", _pixart_sigma(pag=False), _pixart_kwargs(), "pixart"),
    Variant("pixart-sigma-pag-1-prompt", _pixart_sigma(pag=True), _pixart_kwargs(pag_scale=2.0), "pixart"),
    Variant("pixart-sigma-pag-2-prompts", _pixart_sigma(pag=True), _pixart_kwargs(batch=2, pag_scale=2.0), "pixart"),
    Variant("sd3", _sd3(), _sd3_kwargs(), "sd3"),
    Variant("sd3-skip-layer-guidance", _sd3(),
            _sd3_kwargs(skip_guidance_layers=[1], skip_layer_guidance_start=0.2, skip_layer_guidance_stop=0.8), "sd3"),
    Variant("sd3-flow-shift", _sd3(lambda: FlowMatchEulerDiscreteScheduler(shift=3.0)), _sd3_kwargs(), "sd3"),
    Variant("sd3-flow-heun", _sd3(FlowMatchHeunDiscreteScheduler), _sd3_kwargs(), "sd3"),
    Variant("sd3-flow-dpmpp", _sd3(_flow_dpm), _sd3_kwargs(), "sd3"),
    Variant("sd3-flow-unipc", _sd3(_flow_unipc), _sd3_kwargs(), "sd3"),
    Variant("flux-dynamic-shift", _flux(), _flux_kwargs(), "flux"),
    Variant("flux-true-cfg", _flux(), _flux_true_cfg_kwargs, "flux"),
    Variant("flux-img2img", _flux(FluxImg2ImgPipeline),
            lambda: dict(tiny.flux_call_kwargs(), image=_image(), strength=0.6, num_inference_steps=10,
                         output_type="latent"), "flux"),
    Variant("flux-controlnet", _flux(FluxControlNetPipeline, controlnet=_flux_controlnet),
            _flux_kwargs(control_image=_image()), "flux"),
    Variant("wan-2.1", _wan(), _wan_kwargs(), "wan", _frames),
    Variant("wan-2.1-guidance-1", _wan(), _wan_kwargs(guidance_scale=1.0), "wan", _frames),
    # Wan 2.2 A14B: transformer takes the steps at or above the boundary timestep (0-2 of 8 here), transformer_2
    # the rest, so T-GATE's gate at half the run falls in transformer_2's stage
    Variant("wan-2.2-two-stage", _wan(two_stage=True), _wan_kwargs(steps=8), "wan", _frames),
    Variant("wan-2.2-ti2v-per-token-timesteps", **{**_family("wan_ti2v", frames=True), "family": "wan"}),
    Variant("cogvideox", **_family("cogvideox", frames=True)),
    Variant("cogvideox-dynamic-cfg", **_family("cogvideox", frames=True, use_dynamic_cfg=True)),
    Variant("hunyuan-video-true-cfg", **_family("hunyuan_video", frames=True, true_cfg_scale=2.0)),
    Variant("hunyuan-video", **_family("hunyuan_video", frames=True)),
    Variant("ltx-video", **_family("ltx_video", frames=True)),
    Variant("latte", **_family("latte", frames=True)),
    Variant("sana", **_family("sana", frames=False)),
    Variant("qwenimage-true-cfg", **_family("qwenimage", frames=False, true_cfg_scale=2.0)),
    Variant("cogview4-through-block-metadata", **_family("generic", frames=False)),
]
