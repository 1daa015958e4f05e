"""Network definitions of the zoo: denoiser configs, the tiny text encoder and the classifiers.

The denoisers are stock diffusers classes (DiT, PixArt, UNet2DCondition) so that
caching hooks see exactly the modules they see on full-size models. The text
encoder and classifier are small custom modules, saved the diffusers way
(``ModelMixin`` + ``ConfigMixin`` -> safetensors + config.json).
"""

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiTTransformer2DModel,
    PixArtTransformer2DModel,
    UNet2DConditionModel,
    WanTransformer3DModel,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .data import COLOURS, DIRECTIONS, SHAPES

PAD = "<pad>"
CAPTION_VOCAB = [PAD, "a", *COLOURS, *SHAPES]
CAPTION_LENGTH = 4
VIDEO_CAPTION_VOCAB = [*CAPTION_VOCAB, "moving", *DIRECTIONS]
VIDEO_CAPTION_LENGTH = 5
VIDEO_COORDINATES = 3  # condition channels of the moving-shapes model (video_coordinates)
TEXT_DIM = 64


class TinyTextEncoder(ModelMixin, ConfigMixin):
    """Word-level caption encoder: whitespace tokens -> learned token + position embeddings.

    The empty caption (all padding) is the unconditional input for classifier-free guidance.
    """

    @register_to_config
    def __init__(self, vocab: list[str] = CAPTION_VOCAB, max_length: int = CAPTION_LENGTH, dim: int = TEXT_DIM):
        super().__init__()
        self.tokens = nn.Embedding(len(vocab), dim)
        self.positions = nn.Parameter(torch.randn(max_length, dim) * 0.02)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids (B, max_length), padded; unknown words or too-long prompts raise ValueError."""
        vocab, length = self.config.vocab, self.config.max_length
        rows = []
        for prompt in prompts:
            words = prompt.lower().split()
            unknown = [w for w in words if w not in vocab or w == PAD]
            if unknown or len(words) > length:
                raise ValueError(f"cannot encode {prompt!r}: vocabulary is {vocab[1:]}, at most {length} words")
            rows.append([vocab.index(w) for w in words] + [0] * (length - len(words)))
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Encoder hidden states (B, max_length, dim)."""
        return self.tokens(token_ids) + self.positions

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Hidden states for a list of prompts ("" gives the unconditional embedding)."""
        return self(self.tokenize(prompts))


class SmallClassifier(ModelMixin, ConfigMixin):
    """Little CNN for 16x16 images in [0, 1]; ``features`` gives the penultimate layer for Frechet distances."""

    @register_to_config
    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of images in [0, 1]; videos (B, F, C, H, W) as (B, F*C, H, W)."""
        if x.ndim == 5:
            x = x.flatten(1, 2)  # a clip classifier sees the frames stacked as channels, in order
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) of images (or videos) in [0, 1]."""
        return self.head(self.features(x))


# Both transformers: 6 blocks of 4 heads over 8x8 = 64 patch tokens (16x16 pixels, patch 2).
_TRANSFORMER_SHAPE = {"num_attention_heads": 4, "num_layers": 6, "sample_size": 16, "patch_size": 2}


def build_dit() -> DiTTransformer2DModel:
    """Class-conditional pixel-space DiT (hidden 96) for 16x16x1 digits; label 10 is the CFG null class."""
    return DiTTransformer2DModel(
        **_TRANSFORMER_SHAPE, attention_head_dim=24, in_channels=1, out_channels=1, num_embeds_ada_norm=10
    )


def build_pixart() -> PixArtTransformer2DModel:
    """Caption-conditioned pixel-space PixArt (hidden 128, adaLN-single + cross-attention) for 16x16 RGB shapes."""
    return PixArtTransformer2DModel(
        **_TRANSFORMER_SHAPE,
        attention_head_dim=32,
        in_channels=3,
        out_channels=3,
        cross_attention_dim=128,
        caption_channels=TEXT_DIM,
        use_additional_conditions=False,
    )


def build_unet() -> UNet2DConditionModel:
    """Caption-conditioned 3-level UNet (cross-attention at 16x16 and 8x8, plain at 4x4) for shapes."""
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=TEXT_DIM,
    )


def build_wan() -> WanTransformer3DModel:
    """Caption-conditioned pixel-space Wan (4 blocks, hidden 64 = 2 heads x 32, patch (1, 2, 2)) for moving shapes.

    4 frames x 8 x 8 = 256 tokens per video; head dim 32 gives Wan's 3-D RoPE 12 time and
    10 + 10 height/width channels. Its input is the 3 noisy RGB channels and the 3 coordinate
    channels of ``video_coordinates``, concatenated as Wan's image-to-video pipeline concatenates
    its condition channels. Small enough to train on two CPU threads in ~10 minutes.
    """
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=3 + VIDEO_COORDINATES,
        out_channels=3,
        text_dim=TEXT_DIM,
        freq_dim=64,
        ffn_dim=256,
        num_layers=4,
        cross_attn_norm=True,
        rope_max_seq_len=32,  # positions per axis: frames (4) and patches (8) per side
    )


def video_coordinates(batch_size: int, frames: int, height: int, width: int, dtype: torch.dtype,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 3, F, H, W) frame, row and column coordinates in [-1, 1], the moving-shapes model's condition channels.

    Wan has no absolute position embedding (its RoPE gives only offsets between tokens). Without
    these channels the model cannot place the mean of a caption's videos in the noisiest steps,
    and in every training run it ignored the direction word (docs/zoo.md).
    """
    axes = [torch.linspace(-1, 1, n, dtype=dtype, device=device) for n in (frames, height, width)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, F, H, W)
    return grid.expand(batch_size, -1, -1, -1, -1)


def build_video_text_encoder() -> TinyTextEncoder:
    """The caption encoder of the moving-shapes model ("a red circle moving left")."""
    return TinyTextEncoder(vocab=VIDEO_CAPTION_VOCAB, max_length=VIDEO_CAPTION_LENGTH)


def training_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """The noise schedule every zoo model is trained with (1000 steps, linear betas; epsilon unless it says)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type)


def sampling_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """The DDIM sampler shipped with every zoo model, sharing the training noise schedule."""
    return DDIMScheduler.from_config(training_scheduler(prediction_type).config)
