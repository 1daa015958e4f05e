"""Speed-only targets at real model sizes: published denoiser configs with random weights.

``arch:NAME`` builds the denoiser from the config values of the released checkpoint
(written out here: nothing is downloaded) with random weights, and samples it with a
minimal DDIM loop at a CPU-friendly latent size with batched classifier-free guidance.
Random weights say nothing about image quality, so only speed is measured: wall-time
against MAC speedup (the goal: wall-time speedup at least 90% of the MAC one).
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import DDIMScheduler, DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel

from ..errors import UsageError
from .samplers import Sampler

ARCH_PREFIX = "arch:"
LATENT_SIZE = 16  # 128x128 pixels through an 8x VAE; the VAE itself is not run
DEFAULT_STEPS = 20

# runwayml/stable-diffusion-v1-5, unet/config.json
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True,
    freq_shift=0, downsample_padding=1, mid_block_scale_factor=1, norm_eps=1e-5,
)
# facebook/DiT-XL-2-256, transformer/config.json (hidden 16 x 72 = 1152, 28 blocks)
DIT_XL_2 = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, sample_size=32,
    patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_zero", activation_fn="gelu-approximate",
    attention_bias=True, norm_elementwise_affine=False, norm_num_groups=32,
)
# PixArt-alpha/PixArt-XL-2-512x512, transformer/config.json (T5-XXL captions of 120 tokens)
PIXART_ALPHA_512 = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, sample_size=64,
    patch_size=2, cross_attention_dim=1152, caption_channels=4096, norm_type="ada_norm_single",
    activation_fn="gelu-approximate", attention_bias=True, norm_elementwise_affine=False, norm_eps=1e-6,
    num_embeds_ada_norm=1000, interpolation_scale=1, use_additional_conditions=False,
)


def _sd15_call(model, batch):
    text = torch.randn(2 * batch, 77, 768, generator=torch.Generator().manual_seed(1))
    return lambda x, t: model(x, t, encoder_hidden_states=text).sample


def _dit_call(model, batch):
    labels = torch.cat([torch.full((batch,), 1000), torch.arange(batch)])  # null class first, as in DiTPipeline
    return lambda x, t: model(x, timestep=t, class_labels=labels).sample


def _pixart_call(model, batch):
    text = torch.randn(2 * batch, 120, 4096, generator=torch.Generator().manual_seed(1))
    extra = {"resolution": None, "aspect_ratio": None}
    return lambda x, t: model(x, encoder_hidden_states=text, timestep=t, added_cond_kwargs=extra).sample


ARCHS: dict[str, tuple[type, dict, Callable]] = {
    "sd15-unet": (UNet2DConditionModel, SD15_UNET, _sd15_call),
    "dit-xl-2": (DiTTransformer2DModel, DIT_XL_2, _dit_call),
    "pixart-alpha": (PixArtTransformer2DModel, PIXART_ALPHA_512, _pixart_call),
}


# where each config above comes from
CHECKPOINTS = {"sd15-unet": "runwayml/stable-diffusion-v1-5", "dit-xl-2": "facebook/DiT-XL-2-256",
               "pixart-alpha": "PixArt-alpha/PixArt-XL-2-512x512"}


def describe_arch(name: str) -> str:
    """One line for ``stepcache models``: the class and the checkpoint whose config it has."""
    cls, config, _ = ARCHS[name]
    size = f"{config['num_layers']} blocks" if "num_layers" in config else f"channels {config['block_out_channels']}"
    return f"{cls.__name__} as in {CHECKPOINTS[name]} ({size}), random weights"


def build(name: str, **overrides) -> torch.nn.Module:
    """The denoiser of ``name`` with random weights (``overrides`` change config values, e.g. for tests)."""
    if name not in ARCHS:
        raise UsageError(f"unknown model {ARCH_PREFIX}{name}; known: {', '.join(ARCH_PREFIX + n for n in ARCHS)}")
    cls, config, _ = ARCHS[name]
    torch.manual_seed(0)
    return cls(**{**config, **overrides}).eval()


def arch_sampler(name: str, num_steps: int = DEFAULT_STEPS, batch: int = 1, guidance_scale: float = 4.5,
                 latent_size: int = LATENT_SIZE, device: str = "cpu", **overrides) -> Sampler:
    """A speed-only Sampler: DDIM over ``latent_size``² latents with batched CFG, random weights."""
    model = build(name, **overrides).to(device)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=False)
    channels = model.config.in_channels

    @torch.no_grad()
    def sample(steps: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(batch, channels, latent_size, latent_size, generator=generator).to(device)
        denoise = ARCHS[name][2](model, batch)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            timestep = t.expand(2 * batch).to(device)
            prediction = denoise(torch.cat([latents, latents]), timestep)[:, :channels]  # DiT/PixArt add a variance
            uncond, cond = prediction.chunk(2)
            latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
        return latents.cpu()

    pixels = 8 * latent_size  # through the 8x VAE these models are released with
    setup = (f"{latent_size}x{latent_size} latents ({pixels}x{pixels} px), batch {batch}, batched CFG "
             f"{guidance_scale}, DDIM, random weights")
    return Sampler(name=ARCH_PREFIX + name, target=model, sample=sample, num_steps=num_steps, scheduler=scheduler,
                   measures_quality=False, config_defaults=batched_cfg_defaults(), setup=setup, cfg="batched")


def batched_cfg_defaults() -> dict:
    """A bare model has no pipeline to read the CFG mode from: every method with a ``cfg`` field gets "batched"."""
    from ..methods import METHODS
    from .configs import field_names

    return {name: {"cfg": "batched"} for name, cls in METHODS.items() if "cfg" in field_names(cls)}
