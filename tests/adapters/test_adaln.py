"""Gate-only adaLN-Zero: the gates a layer computes alone equal the ones of its full forward."""

import pytest
import torch

import tiny
from stepcache.adapters import adapter_for, adaln
from stepcache.core.hooks import HookSet


def _calls_of_gate_modulations(family):
    """Run the tiny model once; every gate modulation's (module, args, kwargs, output)."""
    model = getattr(tiny, family)()
    adapter, hooks, calls = adapter_for(model), HookSet(), []
    for block in adapter.blocks():
        for module in adapter.gate_modulations(block):
            def record(original, *args, _module=module, **kwargs):
                out = original(*args, **kwargs)
                calls.append((_module, args, kwargs, out))
                return out
            hooks.wrap(module, record)
    with torch.no_grad():
        model(**tiny.model_inputs(family, model))
    hooks.remove()
    return adapter, calls


@pytest.mark.parametrize("family,per_block", [("dit", [1] * 4), ("sd3", [2, 2, 2, 1]), ("flux", [2, 2, 1, 1])])
def test_gates_match_the_full_forward_and_the_rest_is_left_out(family, per_block):
    adapter, calls = _calls_of_gate_modulations(family)
    # SD3's last block has a continuous (non-adaLN-Zero) context norm; FLUX's single blocks one norm
    assert [len(adapter.gate_modulations(b)) for b in adapter.blocks()] == per_block
    assert len(calls) == sum(per_block)
    for module, args, kwargs, full in calls:
        with torch.no_grad():
            fast = adaln.gates_only(module, args, kwargs)
        x = args[0] if args else kwargs["x"]
        assert len(fast) == len(full) and fast[0] is x  # input passed through un-normalised
        gates = [1] if len(full) == 2 else [1, 4]
        for i in gates:
            tiny.assert_within_rounding(fast[i], full[i], tiny.ONE_CALL_EPS)
        for i in set(range(1, len(full))) - set(gates):  # MLP shift/scale: zeros of the right shape
            assert fast[i].shape == full[i].shape and not fast[i].any()


def test_families_without_adaln_zero_have_no_gate_modulations():
    adapter = adapter_for(tiny.pixart())
    assert all(adapter.gate_modulations(b) == [] for b in adapter.blocks())
