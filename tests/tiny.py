"""Tiny randomly initialised diffusers models and pipelines, built from configs (no downloads).

Shared by the tests of every layer: mechanics and exactness need real diffusers classes,
not their size. Text pipelines get precomputed prompt embeddings, so no tokenizer or
text encoder is needed.
"""

from __future__ import annotations

import functools
import inspect

import torch
from diffusers import (
    AutoencoderDC,
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLLTXVideo,
    AutoencoderKLQwenImage,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    CogView4Pipeline,
    CogView4Transformer2DModel,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    LattePipeline,
    LatteTransformer3DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UNet2DModel,
    WanPipeline,
    WanTransformer3DModel,
)

TEXT_DIM = 16

# Kernel rounding. Two float32 computations of the same values that may take different CPU kernels
# (batch 1 vs 2, i.e. split vs batched CFG; 1 vs 2 threads; ATEN_CPU_CAPABILITY default/avx2/avx512,
# which stands in for other processors; a sliced weight) round differently. Rounding grows with the
# magnitude of what is summed, not with each element, so bounds are float32 epsilons of max |expected|.
# Measured 2026-11-25 on a 2-core AMD EPYC over all six kernel/thread combinations, the largest
# max|difference| / max|expected| was, in float32 epsilons:
#   one denoiser call (block skipping, adaLN gates, AdaCache's rates): 3.0
#   a 4-5 step tiny-model run, split against batched CFG, any method: 7.3 (T-GATE; DeepCache 6.0)
#   a 3-step zoo-model run (trained weights), split against batched CFG, images in [0, 1]: 26
# Each bound below is about 8x its worst measurement, for processors with other kernels; a real
# error (a cache shared between CFG branches, the wrong rows of a weight) is 1e-3 or more of the
# magnitude, i.e. over 8000 epsilons.
ONE_CALL_EPS = 24
TINY_RUN_EPS = 64
ZOO_RUN_EPS = 256


def assert_within_rounding(actual, expected, eps: float) -> None:
    """max |actual - expected| <= eps float32 epsilons of max |expected| (see the measurements above)."""
    actual, expected = torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    bound = eps * torch.finfo(torch.float32).eps * expected.abs().max().item()
    difference = (actual - expected).abs().max().item()
    assert difference <= bound, (
        f"max |difference| {difference:.3g} is over {eps} float32 epsilons of max |expected| ({bound:.3g})")


def _seeded(build):
    def wrapper(*args, seed: int = 0, **kwargs):
        torch.manual_seed(seed)
        return build(*args, **kwargs).eval()

    wrapper.__name__ = build.__name__
    return wrapper


@_seeded
def unet_condition(levels: int = 3):
    channels = (8, 16, 16, 16)[:levels]
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
        down_block_types=down, up_block_types=up, cross_attention_dim=TEXT_DIM, attention_head_dim=4,
        norm_num_groups=4,
    )


@_seeded
def unet():
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4,
    )


@_seeded
def dit(num_layers: int = 4):
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=num_layers,
        sample_size=8, patch_size=2, num_embeds_ada_norm=1000,  # DiTPipeline uses 1000 as the null class
    )


@_seeded
def pixart(num_layers: int = 4):
    return PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=num_layers,
        sample_size=8, patch_size=2, cross_attention_dim=16, caption_channels=TEXT_DIM,
        use_additional_conditions=False,
    )


@_seeded
def sd3(num_layers: int = 4):
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=num_layers, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=TEXT_DIM, caption_projection_dim=16,
        pooled_projection_dim=TEXT_DIM, pos_embed_max_size=16,
    )


@_seeded
def flux(num_layers: int = 2, num_single_layers: int = 2):
    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, out_channels=16, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
        axes_dims_rope=(4, 2, 2),
    )


@_seeded
def wan(num_layers: int = 3):
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=TEXT_DIM, freq_dim=16, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True, rope_max_seq_len=32,
    )


@_seeded
def vae(latent_channels: int = 4):
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=latent_channels,
        norm_num_groups=4, sample_size=16,
    )


MODELS = {"unet": unet_condition, "unet2d": unet, "dit": dit, "pixart": pixart, "sd3": sd3, "flux": flux, "wan": wan}


def model_inputs(family: str, model, batch: int = 2, seed: int = 0) -> dict:
    """Keyword arguments for one call of a tiny model of ``family``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.full((batch,), 500.0)
    if family == "unet":
        return dict(sample=torch.randn(batch, 4, 8, 8, generator=g), timestep=t,
                    encoder_hidden_states=torch.randn(batch, 5, TEXT_DIM, generator=g))
    if family == "unet2d":
        return dict(sample=torch.randn(batch, 3, 8, 8, generator=g), timestep=t)
    if family == "dit":
        return dict(hidden_states=torch.randn(batch, 4, 8, 8, generator=g), timestep=t.long(),
                    class_labels=torch.arange(batch) % 10)
    if family == "pixart":
        return dict(hidden_states=torch.randn(batch, 4, 8, 8, generator=g), timestep=t,
                    encoder_hidden_states=torch.randn(batch, 5, TEXT_DIM, generator=g),
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    if family == "sd3":
        return dict(hidden_states=torch.randn(batch, 4, 8, 8, generator=g), timestep=t,
                    encoder_hidden_states=torch.randn(batch, 5, TEXT_DIM, generator=g),
                    pooled_projections=torch.randn(batch, TEXT_DIM, generator=g))
    if family == "flux":
        return dict(hidden_states=torch.randn(batch, 16, 16, generator=g), timestep=t / 1000,
                    encoder_hidden_states=torch.randn(batch, 5, TEXT_DIM, generator=g),
                    pooled_projections=torch.randn(batch, TEXT_DIM, generator=g),
                    img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(5, 3), guidance=None)
    if family == "wan":  # a video: (batch, channels, frames, height, width)
        return dict(hidden_states=torch.randn(batch, 4, 3, 8, 8, generator=g), timestep=t,
                    encoder_hidden_states=torch.randn(batch, 5, TEXT_DIM, generator=g))
    if family == "hunyuan_video_i2v":
        return model_inputs("hunyuan_video", model, batch, seed)
    if family in PIPELINES:  # what the family's pipeline passes (its batch: uncond and cond where it batches CFG)
        return dict(_pipeline_inputs(family))
    raise KeyError(family)


def ddim(num_train_timesteps: int = 1000) -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=num_train_timesteps, clip_sample=False, steps_offset=1)


def _text(batch: int, seed: int, tokens: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, TEXT_DIM, generator=g)


def dit_pipeline(**model_kwargs) -> DiTPipeline:
    return DiTPipeline(transformer=dit(**model_kwargs), vae=vae(), scheduler=ddim(),
                       id2label={i: f"class{i}" for i in range(10)})


def sd_pipeline(**model_kwargs) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae(), text_encoder=None, tokenizer=None, unet=unet_condition(**model_kwargs), scheduler=ddim(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def sd_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    return dict(prompt_embeds=_text(batch, seed), negative_prompt_embeds=_text(batch, seed + 1))


def pixart_pipeline(**model_kwargs) -> PixArtAlphaPipeline:
    return PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=vae(), transformer=pixart(**model_kwargs),
                               scheduler=ddim())


def pixart_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    mask = torch.ones(batch, 5, dtype=torch.long)
    return dict(prompt_embeds=_text(batch, seed), prompt_attention_mask=mask, negative_prompt=None,
                negative_prompt_embeds=_text(batch, seed + 1), negative_prompt_attention_mask=mask,
                use_resolution_binning=False, height=16, width=16)


def sd3_pipeline(**model_kwargs) -> StableDiffusion3Pipeline:
    return StableDiffusion3Pipeline(
        transformer=sd3(**model_kwargs), scheduler=FlowMatchEulerDiscreteScheduler(), vae=_sd3_vae(),
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
        tokenizer_3=None,
    )


def _sd3_vae():
    model = vae()
    model.register_to_config(shift_factor=0.0)
    return model


def sd3_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + 7)
    return dict(prompt_embeds=_text(batch, seed), negative_prompt_embeds=_text(batch, seed + 1),
                pooled_prompt_embeds=torch.randn(batch, TEXT_DIM, generator=g),
                negative_pooled_prompt_embeds=torch.randn(batch, TEXT_DIM, generator=g), height=16, width=16)


def flux_pipeline(**model_kwargs) -> FluxPipeline:
    model = vae()
    model.register_to_config(shift_factor=0.0)
    return FluxPipeline(transformer=flux(**model_kwargs), scheduler=FlowMatchEulerDiscreteScheduler(), vae=model,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)


def flux_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + 7)
    return dict(prompt_embeds=_text(batch, seed), pooled_prompt_embeds=torch.randn(batch, TEXT_DIM, generator=g),
                height=16, width=16)


def denoise(model, family: str, scheduler, steps: int = 4, cfg: str = "batched", batch: int = 1, seed: int = 0):
    """A hand-written sampling loop like diffusers pipelines run, for bare models.

    cfg: "batched" (one call on [uncond, cond]), "split" (two calls per step) or "none".
    The two CFG branches differ in their conditioning, so sharing a cache between them
    would show up in the output.
    """
    cond = model_inputs(family, model, batch=batch, seed=seed)
    uncond = model_inputs(family, model, batch=batch, seed=seed + 100)
    sample_key = "sample" if family in ("unet", "unet2d") else "hidden_states"
    latents = cond.pop(sample_key)
    uncond.pop(sample_key)
    for key in ("timestep", "img_ids", "txt_ids", "guidance", "added_cond_kwargs"):
        uncond.pop(key, None)
    if family == "dit":
        uncond["class_labels"] = torch.full_like(cond["class_labels"], 999)
    scheduler.set_timesteps(steps)
    scale = 1000.0 if family == "flux" else 1.0
    with torch.no_grad():
        for t in scheduler.timesteps:
            timestep = torch.full((batch,), float(t) / scale)
            if family == "dit":
                timestep = timestep.long()
            if cfg == "none":
                pred = _out(model(**{**cond, sample_key: latents, "timestep": timestep}))
            elif cfg == "split":
                pred_u = _out(model(**{**cond, **uncond, sample_key: latents, "timestep": timestep}))
                pred_c = _out(model(**{**cond, sample_key: latents, "timestep": timestep}))
                pred = pred_u + 3.0 * (pred_c - pred_u)
            else:
                both = {k: _cat(uncond.get(k), v) for k, v in cond.items()}
                both.update({sample_key: torch.cat([latents, latents]), "timestep": torch.cat([timestep] * 2)})
                pred_u, pred_c = _out(model(**both)).chunk(2)
                pred = pred_u + 3.0 * (pred_c - pred_u)
            pred = pred[:, : latents.shape[1]]  # DiT/PixArt also predict a variance
            latents = scheduler.step(pred, t, latents).prev_sample
    return latents


def _cat(uncond, cond):
    """Stack the uncond branch's value before the cond one; unbatched inputs (FLUX ids) are shared."""
    return cond if uncond is None else torch.cat([uncond, cond])


def _out(output):
    return output[0] if isinstance(output, tuple) else output.sample


@_seeded
def unet_sdxl(levels: int = 3):
    """A tiny SD-XL U-Net: text-and-time added conditioning (pooled text + 6 size/crop ids)."""
    channels = (8, 16, 16, 16)[:levels]
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",), cross_attention_dim=TEXT_DIM,
        attention_head_dim=4, norm_num_groups=4, addition_embed_type="text_time", addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + TEXT_DIM,
    )


def sdxl_pipeline(**model_kwargs) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline(
        vae=vae(), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
        unet=unet_sdxl(**model_kwargs), scheduler=ddim(), add_watermarker=False,
    )


def sdxl_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + 7)
    return dict(prompt_embeds=_text(batch, seed), negative_prompt_embeds=_text(batch, seed + 1),
                pooled_prompt_embeds=torch.randn(batch, TEXT_DIM, generator=g),
                negative_pooled_prompt_embeds=torch.randn(batch, TEXT_DIM, generator=g), height=16, width=16)


@_seeded
def wan_vae():
    return AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)


def wan_pipeline(two_stage: bool = False, **model_kwargs) -> WanPipeline:
    """Wan 2.1, or with ``two_stage`` Wan 2.2 A14B's layout: ``transformer_2`` takes the steps below the boundary."""
    return WanPipeline(
        tokenizer=None, text_encoder=None, vae=wan_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=wan(**model_kwargs), transformer_2=wan(seed=1, **model_kwargs) if two_stage else None,
        boundary_ratio=0.875 if two_stage else None,
    )


@_seeded
def wan_ti2v(num_layers: int = 3):
    """Wan 2.2 TI2V-5B's layout: 48 latent channels and a timestep per token (``temb`` of 4 dimensions)."""
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=48, out_channels=48,
        text_dim=TEXT_DIM, freq_dim=16, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True, rope_max_seq_len=32,
    )


def wan_ti2v_pipeline() -> WanPipeline:
    vae = _seeded(lambda: AutoencoderKLWan(
        base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2, latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1, scale_factor_spatial=16,
        scale_factor_temporal=4, temperal_downsample=[False, True, True]))()
    return WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                       transformer=wan_ti2v(), expand_timesteps=True)


def wan_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    return dict(prompt_embeds=_text(batch, seed), negative_prompt_embeds=_text(batch, seed + 1), height=32, width=32,
                num_frames=5)


# -- the other diffusers transformer families: tiny models, their pipelines and one call's inputs ------------
@_seeded
def cogvideox(num_layers: int = 3):
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=4,
        text_embed_dim=TEXT_DIM, num_layers=num_layers, sample_width=4, sample_height=4, sample_frames=5, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=5,
    )


def cogvideox_pipeline() -> CogVideoXPipeline:
    vae = _seeded(lambda: AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4))()
    return CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=cogvideox(),
                             scheduler=CogVideoXDDIMScheduler())


def cogvideox_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    return dict(prompt_embeds=_text(batch, seed), negative_prompt_embeds=_text(batch, seed + 1), height=32, width=32,
                num_frames=5)


POOLED_DIM = 8


@_seeded
def hunyuan_video(num_layers: int = 2, num_single_layers: int = 2):
    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=num_layers,
        num_single_layers=num_single_layers, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM, rope_axes_dim=(2, 4, 4),
    )


@_seeded
def hunyuan_video_i2v():
    """HunyuanVideo I2V's token-replace blocks (other modulation layers); it takes the text-to-video model's inputs."""
    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=TEXT_DIM,
        pooled_projection_dim=POOLED_DIM, rope_axes_dim=(2, 4, 4), image_condition_type="token_replace",
    )


def hunyuan_video_pipeline() -> HunyuanVideoPipeline:
    vae = _seeded(lambda: AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4))()
    return HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=hunyuan_video(), vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                                tokenizer_2=None)


def hunyuan_video_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    """With a negative prompt, so true_cfg_scale > 1 runs split CFG (two calls per step)."""
    g = torch.Generator().manual_seed(seed + 7)
    mask = torch.ones(batch, 5, dtype=torch.long)
    return dict(prompt_embeds=_text(batch, seed), pooled_prompt_embeds=torch.randn(batch, POOLED_DIM, generator=g),
                prompt_attention_mask=mask, negative_prompt_embeds=_text(batch, seed + 1),
                negative_pooled_prompt_embeds=torch.randn(batch, POOLED_DIM, generator=g),
                negative_prompt_attention_mask=mask, height=32, width=32, num_frames=5)


@_seeded
def ltx_video(num_layers: int = 3):
    return LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=num_layers, caption_channels=TEXT_DIM,
    )


def ltx_video_pipeline() -> LTXPipeline:
    vae = _seeded(lambda: AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False))()
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                       transformer=ltx_video())


def ltx_video_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    mask = torch.ones(batch, 5, dtype=torch.long)
    return dict(prompt_embeds=_text(batch, seed), prompt_attention_mask=mask,
                negative_prompt_embeds=_text(batch, seed + 1), negative_prompt_attention_mask=mask, height=32,
                width=32, num_frames=9)


@_seeded
def latte(num_layers: int = 2):
    return LatteTransformer3DModel(
        sample_size=8, num_layers=num_layers, patch_size=2, attention_head_dim=8, num_attention_heads=2,
        caption_channels=TEXT_DIM, in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, video_length=2,
    )


def latte_pipeline() -> LattePipeline:
    return LattePipeline(tokenizer=None, text_encoder=None, vae=vae(), transformer=latte(), scheduler=ddim())


def latte_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    return dict(prompt_embeds=_text(batch, seed), negative_prompt=None, negative_prompt_embeds=_text(batch, seed + 1),
                height=16, width=16, video_length=2, clean_caption=False, mask_feature=False)


@_seeded
def sana(num_layers: int = 3):
    return SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=num_layers, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=TEXT_DIM,
        sample_size=8,
    )


def sana_pipeline() -> SanaPipeline:
    vae = _seeded(lambda: AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1], downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407))()
    return SanaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=sana(),
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))


def sana_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    mask = torch.ones(batch, 5, dtype=torch.long)
    return dict(prompt_embeds=_text(batch, seed), prompt_attention_mask=mask, negative_prompt=None,
                negative_prompt_embeds=_text(batch, seed + 1), negative_prompt_attention_mask=mask, height=32,
                width=32, use_resolution_binning=False, complex_human_instruction=None)


@_seeded
def qwenimage(num_layers: int = 3):
    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=num_layers, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=TEXT_DIM, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )


def qwenimage_pipeline() -> QwenImagePipeline:
    vae = _seeded(lambda: AutoencoderKLQwenImage(
        base_dim=4, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4))()
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                             transformer=qwenimage())


def qwenimage_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    """With a negative prompt, so true_cfg_scale > 1 runs split CFG (two calls per step)."""
    mask = torch.ones(batch, 5, dtype=torch.long)
    return dict(prompt_embeds=_text(batch, seed), prompt_embeds_mask=mask, negative_prompt_embeds=_text(batch, seed + 1),
                negative_prompt_embeds_mask=mask, height=32, width=32)


@_seeded
def cogview4(num_layers: int = 3):
    """A model with no adapter of its own: stepcache takes it through diffusers' block metadata ("generic")."""
    return CogView4Transformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=num_layers, attention_head_dim=4, num_attention_heads=4,
        text_embed_dim=TEXT_DIM, time_embed_dim=8, condition_dim=4, rope_axes_dim=(2, 2),
    )


def cogview4_pipeline() -> CogView4Pipeline:
    return CogView4Pipeline(tokenizer=None, text_encoder=None, vae=vae(), transformer=cogview4(),
                            scheduler=FlowMatchEulerDiscreteScheduler())


def cogview4_call_kwargs(batch: int = 1, seed: int = 0) -> dict:
    return dict(prompt_embeds=_text(batch, seed), negative_prompt_embeds=_text(batch, seed + 1), height=16, width=16)


# family -> (tiny pipeline, call kwargs): the families whose bare-model inputs are taken from their pipeline
PIPELINES = {
    "wan": (wan_pipeline, wan_call_kwargs),
    "wan_ti2v": (wan_ti2v_pipeline, wan_call_kwargs),
    "cogvideox": (cogvideox_pipeline, cogvideox_call_kwargs),
    "hunyuan_video": (hunyuan_video_pipeline, hunyuan_video_call_kwargs),
    "ltx_video": (ltx_video_pipeline, ltx_video_call_kwargs),
    "latte": (latte_pipeline, latte_call_kwargs),
    "sana": (sana_pipeline, sana_call_kwargs),
    "qwenimage": (qwenimage_pipeline, qwenimage_call_kwargs),
    "generic": (cogview4_pipeline, cogview4_call_kwargs),
}
MODELS.update(cogvideox=cogvideox, hunyuan_video=hunyuan_video, ltx_video=ltx_video, latte=latte, sana=sana,
              qwenimage=qwenimage, generic=cogview4, wan_ti2v=wan_ti2v, hunyuan_video_i2v=hunyuan_video_i2v)


@functools.lru_cache(maxsize=None)
def _pipeline_inputs(family: str) -> dict:
    """The keyword arguments of the first denoiser call of the family's tiny pipeline (CFG on): the first of
    two steps, whose timestep is the largest (one-step DDIM runs at timestep 0)."""
    build, call_kwargs = PIPELINES[family]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    seen = {}

    def record(module, args, kwargs):
        if not seen:
            seen.update(kwargs, **dict(zip(list(inspect.signature(module.forward).parameters), args)))

    hook = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    with torch.no_grad():
        pipe(**call_kwargs(), num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0))
    hook.remove()
    seen.pop("return_dict", None)
    return seen
