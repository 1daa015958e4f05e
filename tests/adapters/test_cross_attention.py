"""What T-GATE relies on where a family offers a separate cross-attention, checked on every such family.

T-GATE reuses the cross-attention outputs from its gate on and then computes one CFG branch for
both: that is exact only if the text reaches the blocks through the cross-attention alone.
"""

import pytest
import torch

import stepcache
import tiny
import variants
from stepcache.adapters import CROSS_ATTENTION, CROSS_ATTN, adapter_for
from stepcache.api import find_denoisers
from stepcache.core.hooks import HookSet

FAMILIES = [name for name, build in tiny.MODELS.items() if CROSS_ATTENTION in adapter_for(build()).offers]


def _call(model, inputs):
    with torch.no_grad():
        output = model(**inputs)
    return output[0] if isinstance(output, tuple) else output.sample


@pytest.mark.parametrize("family", FAMILIES)
def test_with_its_cross_attention_outputs_fixed_the_text_changes_nothing(family):
    model = tiny.MODELS[family]()
    adapter = adapter_for(model)
    inputs = tiny.model_inputs(family, model)
    other = dict(inputs, encoder_hidden_states=torch.randn_like(inputs["encoder_hidden_states"]))
    assert not torch.equal(_call(model, inputs), _call(model, other))  # the text matters ...
    hooks = HookSet()
    for block in adapter.blocks():
        for module in adapter.sublayers(block).get(CROSS_ATTN, ()):
            hooks.wrap(module, lambda original, *a, **k: torch.ones_like(original(*a, **k)))
    try:  # ... only through the cross-attention
        assert torch.equal(_call(model, inputs), _call(model, other))
    finally:
        hooks.remove()


DIT_VARIANTS = [v for v in variants.VARIANTS if v.family in FAMILIES and v.family not in ("unet", "pixart")
                and v.name != "wan-2.1-guidance-1"]


@pytest.mark.parametrize("variant", DIT_VARIANTS, ids=lambda v: v.name)
def test_tgate_stops_cross_attention_at_the_gate_and_runs_one_branch_after(variant):
    pipe = variant.build()
    name, model = find_denoisers(pipe)[0][-1]  # the denoiser of the last steps
    cross = [m for b in adapter_for(model).blocks() for m in adapter_for(model).sublayers(b).get(CROSS_ATTN, ())]
    batches = []  # per denoiser call that runs its blocks: the batch they see
    count = [0]
    # counted inside the module: a reused cross-attention is still called, but computes nothing
    hooks = cross[0].to_q.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    # the batch the blocks see (the model's own call still gets the whole batch, T-GATE picks its rows inside)
    first_block = adapter_for(model).blocks()[0]
    call_hook = first_block.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(adapter_for(model).block_state(module, args, kwargs)[0].shape[0]),
        with_kwargs=True)
    kwargs = dict(variant.kwargs(), generator=torch.Generator().manual_seed(0))
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=0.75)) as handle:
        with torch.no_grad():
            pipe(**kwargs)
        stats = handle.stats()
        stats = stats.get("denoisers", {}).get(name, stats)  # Wan 2.2: transformer_2 passes the gate
    hooks.remove()
    call_hook.remove()
    after = stats["cross_attn_reused_steps"]
    assert after and stats["cfg_mode"] in ("batched", "split")
    # cross-attention ran on the calls before the gate only; after it one branch (half the batch, or one of two calls)
    calls_before = len(batches) - len(after)
    assert count[0] == calls_before
    if stats["cfg_mode"] == "batched":
        assert batches[-len(after):] == [batches[0] // 2] * len(after)
