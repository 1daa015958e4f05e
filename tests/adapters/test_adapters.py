"""Adapters expose the right blocks, sublayers, block I/O and modulated input for each family."""

import pytest
import torch

import tiny
from stepcache.adapters import (BLOCKS, CROSS_ATTENTION, CROSS_ATTN, FEED_FORWARD, GATED_ATTENTION, MODULATED_INPUT,
                                SELF_ATTN, adapter_for)
from stepcache.core.hooks import HookSet

# every tiny model whose family is a stack of transformer blocks, and those with a modulated block input
TRANSFORMERS = [name for name, build in tiny.MODELS.items() if BLOCKS in adapter_for(build()).offers]
MODULATED = [name for name in TRANSFORMERS if MODULATED_INPUT in adapter_for(tiny.MODELS[name]()).offers]


def _capture_blocks(adapter, model, family):
    """Call the model once and record each block's (args, kwargs, output) and its first sublayer's input."""
    seen, hooks = [], HookSet()
    for block in adapter.blocks():
        def record(original, *args, _block=block, **kwargs):
            out = original(*args, **kwargs)
            seen.append((_block, args, kwargs, out))
            return out
        hooks.wrap(block, record)
    attn_inputs = []
    def record_attn(original, *args, **kwargs):
        attn_inputs.append(args[0] if args else kwargs["hidden_states"])
        return original(*args, **kwargs)
    for first in adapter.sublayers(adapter.blocks()[0]).get(SELF_ATTN, [])[:1]:
        hooks.wrap(first, record_attn)
    with torch.no_grad():
        model(**tiny.model_inputs(family, model))
    hooks.remove()
    return seen, attn_inputs[0] if attn_inputs else None


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_blocks_are_all_transformer_blocks_in_order(family):
    model = tiny.MODELS[family]()
    adapter = adapter_for(model)
    stacks = ("transformer_blocks", "single_transformer_blocks", "blocks", "temporal_transformer_blocks")
    assert len(adapter.blocks()) == sum(len(getattr(model, name, None) or []) for name in stacks)
    seen, _ = _capture_blocks(adapter, model, family)
    assert [block for block, *_ in seen] == adapter.blocks()


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_block_state_round_trip_feeds_the_next_block(family):
    model = tiny.MODELS[family]()
    adapter = adapter_for(model)
    seen, _ = _capture_blocks(adapter, model, family)
    for (block, _, _, out), (nxt, args, kwargs, _) in zip(seen, seen[1:]):
        state = adapter.output_state(block, out)
        assert all(torch.equal(a, b) for a, b in zip(state, adapter.block_state(nxt, args, kwargs)))
        rebuilt = adapter.make_output(block, state)
        assert type(rebuilt) is type(out)


@pytest.mark.parametrize("family", MODULATED)
def test_modulated_input_is_what_the_first_attention_sees(family):
    model = tiny.MODELS[family]()
    adapter = adapter_for(model)
    seen, attn_input = _capture_blocks(adapter, model, family)
    block, args, kwargs, _ = seen[0]
    with torch.no_grad():
        modulated = adapter.modulated_input(block, args, kwargs)
    tiny.assert_within_rounding(modulated, attn_input, tiny.ONE_CALL_EPS)


@pytest.mark.parametrize("family,roles", [
    ("dit", {SELF_ATTN, FEED_FORWARD}),
    ("pixart", {SELF_ATTN, CROSS_ATTN, FEED_FORWARD}),
    ("sd3", {SELF_ATTN, FEED_FORWARD}),
    ("flux", {SELF_ATTN, FEED_FORWARD}),
    ("unet", {SELF_ATTN, CROSS_ATTN, FEED_FORWARD}),
    ("wan", {SELF_ATTN, CROSS_ATTN, FEED_FORWARD}),
    ("cogvideox", {SELF_ATTN, FEED_FORWARD}),
    ("hunyuan_video", {SELF_ATTN, FEED_FORWARD}),
    ("ltx_video", {SELF_ATTN, CROSS_ATTN, FEED_FORWARD}),
    ("sana", {SELF_ATTN, CROSS_ATTN, FEED_FORWARD}),
    ("qwenimage", {SELF_ATTN, FEED_FORWARD}),
])
def test_sublayers_are_modules_of_their_block(family, roles):
    model = tiny.MODELS[family]()
    adapter = adapter_for(model)
    assert (CROSS_ATTENTION in adapter.offers) == (CROSS_ATTN in roles)
    for block in adapter.blocks():
        sublayers = adapter.sublayers(block)
        assert set(sublayers) == roles
        owned = set(map(id, block.modules()))
        assert all(id(m) in owned for modules in sublayers.values() for m in modules)


def test_unet_levels_map_down_and_up_blocks():
    model = tiny.unet_condition(levels=3)
    adapter = adapter_for(model)
    assert adapter.num_levels == 3
    assert adapter.down_block(0) is model.down_blocks[0]
    assert adapter.up_block(0) is model.up_blocks[-1]  # the shallowest up block runs last
    assert adapter.up_block(2) is model.up_blocks[0]
    assert len(adapter.blocks()) == 2 + 1 + 2 * 2  # cross-attn down levels, mid, cross-attn up blocks
    assert CROSS_ATTENTION not in adapter_for(tiny.unet()).offers


def test_latte_blocks_alternate_spatial_and_temporal_as_the_model_runs_them():
    model = tiny.latte()
    adapter = adapter_for(model)
    ran, hooks = [], HookSet()
    for block in adapter.blocks():
        hooks.wrap(block, lambda original, *a, _block=block, **k: ran.append(_block) or original(*a, **k))
    with torch.no_grad():
        model(**tiny.model_inputs("latte", model))
    hooks.remove()
    assert ran == adapter.blocks() and len(ran) == 2 * len(model.transformer_blocks)
    # text enters only the spatial blocks, through their cross-attention
    assert [CROSS_ATTN in adapter.sublayers(b) for b in ran] == [True, False] * len(model.transformer_blocks)
    assert BLOCKS not in adapter.offers and CROSS_ATTENTION in adapter.offers


GATED = [name for name, build in tiny.MODELS.items() if GATED_ATTENTION in adapter_for(build()).offers]


@pytest.mark.parametrize("family", GATED)
def test_attention_residual_is_what_the_attention_adds_to_the_image_tokens(family):
    """With every other sublayer's output zeroed, a block adds exactly its gated self-attention output."""
    model = tiny.MODELS[family]()
    adapter = adapter_for(model)
    checked, hooks = 0, HookSet()
    calls = {}  # block -> (args, kwargs, output, attention output, gate module output)
    for block in adapter.blocks():
        gated = adapter.gated_attention(block)
        if gated is None:
            continue
        attention, gate = gated
        record = calls.setdefault(block, {})
        hooks.wrap(block, lambda original, *a, _r=record, **k: _r.update(args=a, kwargs=k, out=original(*a, **k))
                   or _r["out"])
        hooks.wrap(attention, lambda original, *a, _r=record, **k: _r.update(attn=original(*a, **k)) or _r["attn"])
        if gate is not None:
            hooks.wrap(gate, lambda original, *a, _r=record, **k: _r.update(gate=original(*a, **k)) or _r["gate"])
        for module in (m for ms in adapter.sublayers(block).values() for m in ms if m is not attention):
            hooks.wrap(module, lambda original, *a, **k: _zeros_like(original(*a, **k)))
    try:
        with torch.no_grad():
            model(**tiny.model_inputs(family, model))
            for block, r in calls.items():
                added = adapter.output_state(block, r["out"])[0] - adapter.block_state(block, r["args"], r["kwargs"])[0]
                residual = adapter.attention_residual(block, r["attn"], r.get("gate"), r["args"], r["kwargs"])
                tiny.assert_within_rounding(residual.expand_as(added), added, tiny.ONE_CALL_EPS)
                checked += 1
    finally:
        hooks.remove()
    assert checked


def _zeros_like(output):
    return tuple(_zeros_like(o) for o in output) if isinstance(output, tuple) else torch.zeros_like(output)
