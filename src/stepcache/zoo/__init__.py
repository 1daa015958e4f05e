"""stepcache.zoo: small trained diffusion models for measuring caching quality offline.

Models are real diffusers classes (DiT, PixArt, UNet2DCondition) trained on tiny
offline datasets and shipped as package data; see docs/zoo.md.

>>> from stepcache import zoo
>>> pipe = zoo.load("dit-digits")
>>> images = pipe([0, 1, 2], num_inference_steps=25, guidance_scale=3.0).images
"""

import torch

from . import data, nets, registry
from .pipelines import ZooPipeline

__all__ = ["load", "list_models", "load_classifier", "real_images"]


def list_models() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every shipped diffusion model."""
    return [(m.name, m.description) for m in registry.MODELS.values()]


def load(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> ZooPipeline:
    """Load zoo model ``name`` offline as a pipeline (denoiser at ``.transformer``/``.unet``)."""
    spec = registry.get(name)
    modules = {
        spec.denoiser_attr: spec.denoiser_cls.from_pretrained(spec.path / spec.denoiser_attr, torch_dtype=dtype),
        "scheduler": nets.DDIMScheduler.from_pretrained(spec.path / "scheduler"),
    }
    if spec.captioned:
        modules["text_encoder"] = nets.TinyTextEncoder.from_pretrained(spec.path / "text_encoder", torch_dtype=dtype)
    pipe = spec.pipeline_cls(**modules)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_classifier(dataset: str, device: str | torch.device = "cpu") -> nets.SmallClassifier:
    """The shipped scoring classifier of ``dataset`` ("digits" or "shapes"), in eval mode."""
    if dataset not in data.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(data.DATASETS)}")
    return nets.SmallClassifier.from_pretrained(registry.classifier_path(dataset)).to(device).eval()


def real_images(dataset: str, split: str = "test") -> torch.Tensor:
    """Real images of ``dataset`` as a (N, C, 16, 16) tensor in [0, 1] (labels: ``data.load_dataset``)."""
    return data.load_dataset(dataset, split)[0]
