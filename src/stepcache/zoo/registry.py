"""The zoo's catalogue: what each shipped model is, how it is built, trained and loaded."""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel, WanTransformer3DModel

from . import nets
from .pipelines import (ClassConditionalPipeline, PixArtCaptionPipeline, UNetCaptionPipeline, WanCaptionPipeline,
                        ZooPipeline)

MODELS_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class ZooModel:
    """One shipped diffusion model and its training recipe."""

    name: str
    description: str
    dataset: str
    denoiser_attr: str  # pipeline attribute and weights subfolder: "transformer" or "unet"
    denoiser_cls: type
    build: Callable
    pipeline_cls: type[ZooPipeline]
    train_steps: int
    lr: float
    batch_size: int = 32
    train_threads: int = 1  # CPU threads while training; results are reproducible for a fixed count
    min_snr_gamma: float | None = None  # Min-SNR loss weighting (train.py); None trains on the plain noise MSE
    build_text_encoder: Callable = nets.TinyTextEncoder  # captioned models: their caption encoder, untrained
    # what the denoiser predicts: "epsilon" (the noise) or "v_prediction" (velocity, Salimans & Ho 2022)
    prediction_type: str = "epsilon"
    # training timesteps are drawn with density proportional to t ** timestep_power (0: uniform, as in DDPM)
    timestep_power: float = 0.0

    @property
    def captioned(self) -> bool:
        return self.pipeline_cls is not ClassConditionalPipeline

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.name


MODELS = {
    m.name: m
    for m in (
        ZooModel(
            "dit-digits",
            "class-conditional DiT (6 blocks, hidden 96, patch 2) on 16x16 grayscale digits 0-9",
            "digits",
            "transformer",
            DiTTransformer2DModel,
            nets.build_dit,
            ClassConditionalPipeline,
            train_steps=3000,
            lr=1e-3,
        ),
        ZooModel(
            "pixart-shapes",
            "caption-conditioned PixArt (6 blocks, hidden 128, cross-attention) on 16x16 RGB shapes",
            "shapes",
            "transformer",
            PixArtTransformer2DModel,
            nets.build_pixart,
            PixArtCaptionPipeline,
            train_steps=4000,
            lr=8e-3,  # at 1e-3 it learnt the shape word far more slowly (docs/zoo.md)
            train_threads=2,
            min_snr_gamma=5.0,
        ),
        ZooModel(
            "unet-shapes",
            "caption-conditioned 3-level UNet2DCondition (32/64/64 ch, cross-attention) on 16x16 RGB shapes",
            "shapes",
            "unet",
            UNet2DConditionModel,
            nets.build_unet,
            UNetCaptionPipeline,
            train_steps=2000,
            lr=5e-4,
        ),
        ZooModel(
            "wan-moving-shapes",
            "caption-conditioned Wan video transformer (4 blocks, hidden 64, patch (1, 2, 2)) on 4-frame 16x16 "
            "RGB moving shapes",
            "moving-shapes",
            "transformer",
            WanTransformer3DModel,
            nets.build_wan,
            WanCaptionPipeline,
            train_steps=3000,
            lr=8e-3,  # short runs learn far faster at a high rate (pixart-shapes, docs/zoo.md)
            train_threads=2,
            build_text_encoder=nets.build_video_text_encoder,
            # trained on the noise, it learnt each frame but not their order (docs/zoo.md): the velocity's
            # plain MSE weighs the noisiest steps, where a video's motion is decided, far more
            prediction_type="v_prediction",
            # drawn uniformly, the direction word was learnt in some seeds' runs and ignored in others;
            # with density ~ t (3x as many steps above t = 500 as below) it learnt it in every pilot (docs/zoo.md)
            timestep_power=1.0,
        ),
    )
}


def get(name: str) -> ZooModel:
    """The catalogue entry of ``name``; ValueError naming the known models otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def classifier_path(dataset: str) -> Path:
    """Folder of the shipped classifier for ``dataset``."""
    return MODELS_DIR / f"classifier-{dataset}"
