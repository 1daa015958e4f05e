"""Other diffusers transformers, through diffusers' own block metadata (``TransformerBlockRegistry``).

diffusers describes the transformer blocks its caching hooks (FirstBlockCache, MagCache) work on:
which argument holds the image tokens, which the text tokens, and where each sits in the block's
output. A model that has no adapter of its own is taken here when its blocks are one list of
blocks diffusers describes, all of one class: then the list is a chain handing (image[, text])
tokens on, whose residual can be cached (Δ-DiT, AdaCache). That metadata says nothing about
sublayers, timestep modulation or cross-attention, so methods needing those are refused, naming
what is missing. A model whose blocks sit in several lists (dual- then single-stream) is refused:
what it does between the lists is not described.
"""

from __future__ import annotations

import functools
import inspect

from torch import nn

from .base import BLOCKS, DIT, Adapter, kwarg

# the attributes diffusers keeps block lists in (diffusers.hooks._common), in the order models run them
_BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks", "layers", "visual_transformer_blocks",
                "temporal_transformer_blocks")


def _metadata(block_class: type):
    """diffusers' metadata for a block class, or None."""
    from diffusers.hooks._helpers import TransformerBlockRegistry

    try:
        return TransformerBlockRegistry.get(block_class)
    except ValueError:  # "Model class ... not registered."
        return None


def _described_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """The model's block lists that hold blocks diffusers describes (none for what is not a diffusers model)."""
    from diffusers import ModelMixin

    if not isinstance(model, ModelMixin):  # e.g. torch.compile's wrapper, which forwards attribute reads
        return {}
    lists = {name: getattr(model, name, None) for name in _BLOCK_LISTS}
    return {name: blocks for name, blocks in lists.items()
            if isinstance(blocks, nn.ModuleList) and len(blocks) and any(_metadata(type(b)) for b in blocks)}


def _returns_tuple(block_class: type) -> bool:
    annotation = inspect.signature(block_class.forward).return_annotation
    return "tuple" in str(annotation).lower()


class GenericAdapter(Adapter):
    family = "generic"
    model_classes = ()
    description = ("other diffusers transformers whose blocks diffusers' TransformerBlockRegistry describes "
                   "(one list of blocks of one class)")
    label = "other diffusers transformers"
    capabilities = frozenset({DIT, BLOCKS})

    def __init__(self, model):
        super().__init__(model)
        ((self._list_name, blocks),) = _described_lists(model).items()
        self._blocks = list(blocks)
        self._meta = _metadata(type(self._blocks[0]))
        self._tuple = self._meta.return_encoder_hidden_states_index is not None

    @classmethod
    def accepts(cls, model):
        return bool(_described_lists(model)) and cls.refusal(model) is None

    @classmethod
    def refusal(cls, model):
        lists = _described_lists(model)
        if not lists:
            return None  # not a transformer diffusers describes: nothing to say about it
        if len(lists) > 1:
            return (f"its blocks sit in several lists ({', '.join(lists)}) and diffusers' block metadata does not "
                    "say what the model does between them")
        ((name, blocks),) = lists.items()
        classes = {type(b) for b in blocks}
        if len(classes) > 1 or _metadata(next(iter(classes))) is None:
            return (f"its {name} mix block classes ({', '.join(sorted(c.__name__ for c in classes))}) or hold one "
                    "diffusers' TransformerBlockRegistry does not describe")
        block_class = next(iter(classes))
        meta = _metadata(block_class)
        if meta.return_encoder_hidden_states_index is None and _returns_tuple(block_class):
            return f"{block_class.__name__} returns a tuple whose other entries the block metadata does not name"
        return None

    def blocks(self):
        return list(self._blocks)

    def block_state(self, block, args, kwargs):
        meta = self._meta
        hidden = _argument(block, args, kwargs, meta.hidden_states_argument_name)
        if not self._tuple:
            return (hidden,)
        return hidden, _argument(block, args, kwargs, meta.encoder_hidden_states_argument_name)

    def output_state(self, block, output):
        if not self._tuple:
            return (output,)
        return output[self._meta.return_hidden_states_index], output[self._meta.return_encoder_hidden_states_index]

    def make_output(self, block, state):
        if not self._tuple:
            return state[0]
        output = [None, None]
        output[self._meta.return_hidden_states_index] = state[0]
        output[self._meta.return_encoder_hidden_states_index] = state[1]
        return tuple(output)


def _argument(block, args, kwargs, name):
    """A block's argument ``name``, passed by keyword or at its position in the block's forward."""
    return kwarg(args, kwargs, name, _positions(type(block))[name])


@functools.lru_cache(maxsize=None)
def _positions(block_class: type) -> dict[str, int]:
    return {name: i - 1 for i, name in enumerate(inspect.signature(block_class.forward).parameters)}  # i=0: self
