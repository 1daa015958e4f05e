"""Minimal diffusers pipelines for the zoo models, one per conditioning type.

The sampling loop deliberately mirrors diffusers' own pipelines
(``scheduler.set_timesteps`` then ``scheduler.step`` once per timestep, denoiser
as ``.transformer`` or ``.unet``) because stepcache detects denoising steps and
runs by hooking exactly those calls.
"""

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from . import nets
from .data import SHAPES_SIZE, VIDEO_FRAMES

CFG_MODES = ("batched", "split")
OUTPUT_TYPES = ("pil", "pt")
DEFAULT_GUIDANCE = 2.0  # 3 and above over-saturate these small models (docs/zoo.md)


class ZooPipeline(DiffusionPipeline):
    """Shared sampling loop; subclasses define the conditioning and how the denoiser is called."""

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet if "unet" in self.config else self.transformer

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the current call guides, read by caches (T-GATE) as on diffusers' own pipelines."""
        return self._guidance_scale != 1

    def conditions(self, inputs) -> tuple[object, object]:
        """``(cond, uncond)`` batches for ``inputs``; uncond is the CFG null input of the same batch size."""
        raise NotImplementedError

    def denoise(self, latents: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """Predicted noise for ``latents`` at timestep ``t`` under condition batch ``cond``."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(
        self,
        inputs,
        num_inference_steps: int = 25,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | None = None,
        cfg_mode: str = "batched",
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        """Sample one image per class label / prompt in ``inputs``.

        ``cfg_mode`` "batched" runs one denoiser call on the [uncond, cond] batch per step,
        "split" runs two (uncond, then cond); ``guidance_scale`` 1 disables CFG (one call).
        ``output_type`` "pil" gives a list of PIL images, "pt" a (B, C, H, W) tensor in [0, 1].
        """
        if cfg_mode not in CFG_MODES or output_type not in OUTPUT_TYPES:
            raise ValueError(f"cfg_mode must be one of {CFG_MODES}, output_type one of {OUTPUT_TYPES}")
        self._guidance_scale = guidance_scale
        cond, uncond = self.conditions(inputs)
        latents = randn_tensor(self.latent_shape(len(cond)), generator=generator, device=self.device, dtype=self.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for t in self.scheduler.timesteps:
            noise_pred = self.guided_noise(latents, t, cond, uncond, guidance_scale, cfg_mode)
            latents = self.scheduler.step(noise_pred, t, latents).prev_sample
        return self.output(latents, output_type)

    def latent_shape(self, batch_size: int) -> tuple[int, ...]:
        """Shape of the initial noise (the denoiser's input) for ``batch_size`` samples."""
        config = self.denoiser.config
        return (batch_size, config.in_channels, config.sample_size, config.sample_size)

    def output(self, latents: torch.Tensor, output_type: str):
        """The pipeline's return value for the final ``latents``."""
        return ImagePipelineOutput(images=to_output(latents, output_type))

    def guided_noise(self, latents, t, cond, uncond, guidance_scale: float, cfg_mode: str) -> torch.Tensor:
        """Classifier-free-guided noise prediction for one step."""
        if guidance_scale == 1:
            return self.denoise(latents, t, cond)
        if cfg_mode == "batched":
            both = torch.cat([uncond, cond])
            noise_uncond, noise_cond = self.denoise(torch.cat([latents, latents]), t, both).chunk(2)
        else:
            noise_uncond = self.denoise(latents, t, uncond)
            noise_cond = self.denoise(latents, t, cond)
        return noise_uncond + guidance_scale * (noise_cond - noise_uncond)


class ClassConditionalPipeline(ZooPipeline):
    """DiT pipeline conditioned on integer class labels; the null class (= number of classes) is uncond."""

    def __init__(self, transformer, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    def conditions(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.as_tensor([inputs] if isinstance(inputs, int) else inputs, device=self.device).long().flatten()
        num_classes = self.transformer.config.num_embeds_ada_norm
        if labels.numel() == 0 or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"class labels must be in [0, {num_classes}), got {labels.tolist()}")
        return labels, torch.full_like(labels, num_classes)

    def denoise(self, latents, t, cond):
        return self.transformer(latents, timestep=t.expand(len(latents)), class_labels=cond).sample


class CaptionPipeline(ZooPipeline):
    """Base for caption-conditioned pipelines: prompts go through the tiny text encoder; "" is uncond."""

    def conditions(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not prompts:
            raise ValueError("need at least one prompt")
        cond = self.text_encoder.encode(prompts).to(self.dtype)
        return cond, self.text_encoder.encode([""] * len(prompts)).to(self.dtype)


class PixArtCaptionPipeline(CaptionPipeline):
    """PixArt pipeline: captions enter through the transformer's cross-attention."""

    def __init__(self, transformer, text_encoder, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)

    def denoise(self, latents, t, cond):
        no_extra_conditions = {"resolution": None, "aspect_ratio": None}
        return self.transformer(
            latents, encoder_hidden_states=cond, timestep=t.expand(len(latents)), added_cond_kwargs=no_extra_conditions
        ).sample


class UNetCaptionPipeline(CaptionPipeline):
    """UNet2DCondition pipeline: captions enter through the UNet's cross-attention blocks."""

    def __init__(self, unet, text_encoder, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, scheduler=scheduler)

    def denoise(self, latents, t, cond):
        return self.unet(latents, t.expand(len(latents)), encoder_hidden_states=cond).sample


class WanCaptionPipeline(CaptionPipeline):
    """Video pipeline for a ``WanTransformer3DModel``: captions through its cross-attention, pixel-space frames.

    The transformer is called as diffusers' ``WanImageToVideoPipeline`` calls it: ``hidden_states``
    (B, C, F, H, W) are the noisy frames with condition channels concatenated (here the frame,
    row and column coordinates of ``nets.video_coordinates``), then ``timestep`` and
    ``encoder_hidden_states`` by keyword. Returns
    ``WanPipelineOutput(frames=...)``: "pt" a (B, F, C, H, W) tensor in [0, 1] (diffusers'
    layout of video frames), "pil" one list of PIL frames per video.
    """

    def __init__(self, transformer, text_encoder, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)

    def latent_shape(self, batch_size):
        return (batch_size, self.transformer.config.out_channels, VIDEO_FRAMES, SHAPES_SIZE, SHAPES_SIZE)

    def denoise(self, latents, t, cond):
        batch, _, frames, height, width = latents.shape
        coordinates = nets.video_coordinates(batch, frames, height, width, latents.dtype, latents.device)
        return self.transformer(hidden_states=torch.cat([latents, coordinates], dim=1), timestep=t.expand(batch),
                                encoder_hidden_states=cond, return_dict=False)[0]

    def output(self, latents, output_type):
        frames = latents.transpose(1, 2)  # (B, C, F, H, W) -> (B, F, C, H, W)
        if output_type == "pt":
            return WanPipelineOutput(frames=to_output(frames, "pt"))  # elementwise: any number of dims
        return WanPipelineOutput(frames=[to_output(video, "pil") for video in frames])


def to_output(latents: torch.Tensor, output_type: str):
    """Map model-space images in [-1, 1] to a [0, 1] tensor ("pt") or a list of PIL images ("pil")."""
    images = (latents / 2 + 0.5).clamp(0, 1).float()
    if output_type == "pt":
        return images
    arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
