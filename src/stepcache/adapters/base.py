"""What a caching method may know about a denoiser, in one interface for every model family.

Methods never look at model classes: they ask an adapter for the blocks, the sublayers of
a block, the tensors that flow between blocks and the timestep-modulated input. Adding a
model family is one new module in this package.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

# Roles of a block's sublayers, as methods name them.
SELF_ATTN = "attn"  # self-attention (joint text+image attention in MMDiT blocks)
CROSS_ATTN = "cross_attn"  # attention to the text/condition tokens, where separate
FEED_FORWARD = "ff"  # the MLP, on the image tokens (and the text tokens in MMDiT blocks)
SUBLAYER_ROLES = (SELF_ATTN, CROSS_ATTN, FEED_FORWARD)

BlockState = tuple  # the tensors one block hands the next, e.g. (hidden,) or (hidden, encoder_hidden)

# Capabilities: what an adapter can tell a method about its models. Adapters declare the ones they
# offer, methods the ones they need (``CacheConfig.requires``); a method runs on a model when the
# model's adapter offers everything it needs. Each is a part of the Adapter interface below.
DIT = "dit"  # a diffusion transformer: its work is done by transformer blocks
BLOCKS = "blocks"  # its blocks form one chain whose hand-over tensors can be read and replaced
SUBLAYERS = "sublayers"  # each block's attention and MLP sublayer modules by role
CROSS_ATTENTION = "cross_attention"  # a separate cross-attention sublayer, the only way text enters the blocks
MODULATED_INPUT = "modulated_input"  # the first block's timestep-modulated input
ADALN_GATES = "adaln_gates"  # adaLN-Zero layers that can compute only their gates
GATED_ATTENTION = "gated_attention"  # each block's gated self-attention output
SKIP_LEVELS = "skip_levels"  # U-Net down and up blocks by skip level
FRAMES = "frames"  # the blocks' image tokens are a video's frames, one equal run per (patched) frame, in order

CAPABILITIES: dict[str, str] = {  # capability -> what a model lacks without it, for messages and tables
    DIT: "transformer denoiser",
    BLOCKS: "block chain with one token layout",
    SUBLAYERS: "attention/MLP sublayers",
    CROSS_ATTENTION: "separate cross-attention",
    MODULATED_INPUT: "timestep-modulated block input",
    ADALN_GATES: "adaLN-Zero gates",
    GATED_ATTENTION: "gated self-attention output",
    SKIP_LEVELS: "U-Net skip levels",
    FRAMES: "frame-ordered video tokens",
}


class Adapter:
    """Base adapter; a family subclass fills in what differs between families."""

    family: ClassVar[str] = ""
    model_classes: ClassVar[tuple[type, ...]] = ()
    description: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the family's name in the README's method table
    note: ClassVar[str] = ""  # what the table should add about models whose configuration offers less
    capabilities: ClassVar[frozenset[str]] = frozenset()  # what every model of the family offers

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._model_params = list(inspect.signature(model.forward).parameters)

    @classmethod
    def capabilities_of(cls, model_class: type) -> frozenset[str]:
        """What models of ``model_class`` (one of ``model_classes``) offer; a family may narrow it per class."""
        return cls.capabilities

    @property
    def offers(self) -> frozenset[str]:
        """What this model offers; a family whose configs differ (a U-Net without text) narrows it further."""
        return self.capabilities_of(type(self.model))

    @classmethod
    def accepts(cls, model: nn.Module) -> bool:
        """Whether the family takes ``model``, whose class it does not list, by its structure (most take none)."""
        return False

    @classmethod
    def refusal(cls, model: nn.Module) -> str | None:
        """For a family that takes models by structure: why it does not take ``model`` (None if it does not apply)."""
        return None

    # -- the denoiser call --------------------------------------------------------------
    def sample_and_timestep(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any]:
        """The noisy input and the timestep of one denoiser call."""
        sample = args[0] if args else kwargs[self._model_params[0]]
        if "timestep" in kwargs:
            return sample, kwargs["timestep"]
        index = self._model_params.index("timestep")
        return sample, args[index] if len(args) > index else None

    # -- transformer-style blocks -------------------------------------------------------
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks in execution order."""
        raise NotImplementedError(f"{type(self).__name__} exposes no transformer blocks")

    def sublayers(self, block: nn.Module) -> dict[str, Sequence[nn.Module]]:
        """Role -> the modules of that role in a block (only roles the block has; none without SUBLAYERS)."""
        return {}

    def gate_modulations(self, block: nn.Module) -> list[nn.Module]:
        """adaLN-Zero layers of a block whose outputs other than the gates feed only its sublayers.

        On a step that reuses every sublayer of the block, these may compute just their gates
        (``adaln.gates_only``). Families without such layers (PixArt, UNet) have none.
        """
        return []

    def block_state(self, block: nn.Module, args: tuple, kwargs: dict) -> BlockState:
        """The tensors entering a block."""
        return (args[0] if args else kwargs["hidden_states"],)

    def output_state(self, block: nn.Module, output: Any) -> BlockState:
        """The tensors leaving a block, in the same order as ``block_state``."""
        return (output,)

    def make_output(self, block: nn.Module, state: BlockState) -> Any:
        """A block output built from tensors, in the block's own return format."""
        return state[0]

    def modulated_input(self, block: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
        """The timestep-modulated input of a block's first sublayer (norm(h) * (1 + scale) + shift)."""
        raise NotImplementedError(f"{self.family} models have no timestep-modulated block input")

    def modulation_norm(self, block: nn.Module) -> nn.Module:
        """The norm ``modulated_input`` calls, which the block's own forward calls again with the same arguments."""
        raise NotImplementedError(f"{self.family} models have no timestep-modulated block input")

    def gated_attention(self, block: nn.Module) -> tuple[nn.Module, nn.Module | None] | None:
        """(the block's self-attention, the module whose output holds the gate the block multiplies its output
        by, or None where the block computes that gate itself), or None for a block without a gated
        self-attention output of its own. AdaCache's reference signal is that gated output."""
        return None

    def attention_residual(self, block: nn.Module, attention_output: Any, gate_output: Any, args: tuple,
                           kwargs: dict) -> torch.Tensor:
        """What the block adds to its (image) tokens from its self-attention, in the block's own arithmetic:
        the gate times ``attention_output``. ``gate_output`` is the output of the gate module that
        ``gated_attention`` names (None if it names none); ``args``, ``kwargs`` are the block's."""
        raise NotImplementedError(f"{self.family} blocks have no gated self-attention output")

    def token_frames(self, args: tuple, kwargs: dict) -> int:
        """Frames in the image tokens the blocks carry, for one denoiser call (its args, kwargs): the tokens
        are that many equal runs, one per (patched) frame, in frame order. AdaCache's motion
        regularisation compares them."""
        raise NotImplementedError(f"{self.family} models carry no frame-ordered tokens")

    def block_kind(self, block: nn.Module) -> str:
        """A name for blocks of different structure within one model (FLUX: dual / single)."""
        return type(block).__name__


def kwarg(args: tuple, kwargs: dict, name: str, position: int) -> Any:
    """An argument passed either by keyword or at a known position."""
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


class TwoStreamAdapter(Adapter):
    """Families whose blocks take ``(hidden_states, encoder_hidden_states, ...)``, by position or keyword, and
    return ``(hidden_states, encoder_hidden_states)``: image (video) tokens first (CogVideoX, HunyuanVideo)."""

    def block_state(self, block, args, kwargs):
        return (kwarg(args, kwargs, "hidden_states", 0), kwarg(args, kwargs, "encoder_hidden_states", 1))

    def output_state(self, block, output):
        return tuple(output)

    def make_output(self, block, state):
        return tuple(state)


class JointStreamAdapter(Adapter):
    """Families whose blocks carry image and text tokens side by side (MMDiT: SD3, FLUX).

    Blocks take ``hidden_states`` and ``encoder_hidden_states`` by keyword and return
    ``(encoder_hidden_states, hidden_states)``; the state order here is (image, text).
    """

    def block_state(self, block, args, kwargs):
        return (kwargs["hidden_states"], kwargs["encoder_hidden_states"])

    def output_state(self, block, output):
        encoder_hidden, hidden = output
        return (hidden, encoder_hidden)

    def make_output(self, block, state):
        hidden, encoder_hidden = state
        # SD3's last block is "context_pre_only": it hands no text tokens on
        return (None if getattr(block, "context_pre_only", False) else encoder_hidden), hidden

    def gated_attention(self, block):
        # joint blocks: attn returns (image, text) outputs; norm1's output[1] is the image stream's gate
        return block.attn, block.norm1

    def attention_residual(self, block, attention_output, gate_output, args, kwargs):
        return gate_output[1].unsqueeze(1) * attention_output[0]
