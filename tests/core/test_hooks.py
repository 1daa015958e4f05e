import pytest
import torch
from torch import nn

from stepcache.core.hooks import HookSet


def test_wrap_changes_forward_and_remove_restores_it():
    layer = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    before = layer(x)
    hooks = HookSet()
    hooks.wrap(layer, lambda original, *a, **k: original(*a, **k) * 2)
    assert torch.equal(layer(x), before * 2)
    hooks.remove()
    assert torch.equal(layer(x), before)
    assert "forward" not in layer.__dict__
    assert len(hooks) == 0


def test_nested_wrappers_undo_in_reverse_order():
    layer = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    before = layer(x)
    hooks = HookSet()
    hooks.wrap(layer, lambda original, *a, **k: original(*a, **k) + 1)
    hooks.wrap(layer, lambda original, *a, **k: original(*a, **k) * 3)
    assert torch.allclose(layer(x), (before + 1) * 3)
    hooks.remove()
    assert torch.equal(layer(x), before)


def test_an_existing_instance_forward_is_put_back():
    layer = nn.Linear(3, 3)
    own = lambda x: x  # noqa: E731  (as accelerate-style hooks leave behind)
    layer.forward = own
    hooks = HookSet()
    hooks.wrap(layer, lambda original, *a, **k: original(*a, **k) * 0)
    hooks.remove()
    assert layer.__dict__["forward"] is own


def test_removing_under_a_foreign_wrapper_is_an_error():
    layer = nn.Linear(3, 3)
    hooks = HookSet()
    hooks.wrap(layer, lambda original, *a, **k: original(*a, **k))
    layer.forward = lambda x: x
    with pytest.raises(RuntimeError, match="replaced after stepcache wrapped it"):
        hooks.remove()


class Greeter:
    def __call__(self, name):
        return f"hello {name}"


def test_wrap_call_wraps_calls_of_that_object_only_and_remove_restores_its_class():
    greeter, other = Greeter(), Greeter()
    hooks = HookSet()
    hooks.wrap_call(greeter, lambda original, *a, **k: original(*a, **k).upper())
    assert greeter("x") == "HELLO X" and other("x") == "hello x"
    assert isinstance(greeter, Greeter) and type(greeter).__name__ == "Greeter"
    hooks.remove()
    assert type(greeter) is Greeter and greeter("x") == "hello x" and "__class__" not in greeter.__dict__


def test_removing_a_call_wrapper_under_a_foreign_class_change_is_an_error():
    greeter = Greeter()
    hooks = HookSet()
    hooks.wrap_call(greeter, lambda original, *a, **k: original(*a, **k))
    greeter.__class__ = type("Other", (Greeter,), {})
    with pytest.raises(RuntimeError, match="replaced after stepcache wrapped it"):
        hooks.remove()


def test_set_attribute_gives_an_own_attribute_and_remove_takes_it_away():
    layer = nn.Linear(3, 3)
    hooks = HookSet()
    marker = object()
    hooks.set_attribute(layer, "__deepcopy__", marker)
    assert layer.__dict__["__deepcopy__"] is marker
    hooks.remove()
    assert "__deepcopy__" not in layer.__dict__
