"""OutputMemo hands a recorded module output to the next identical call, once."""

import torch
from torch import nn

from stepcache.core.hooks import HookSet
from stepcache.core.memo import OutputMemo


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x, scale=1.0):
        self.calls += 1
        return self.linear(x) * scale


def memoised():
    module, hooks = Counting(), HookSet()
    memo = OutputMemo(module)
    memo.install(hooks)
    return module, memo, hooks


def test_the_next_identical_call_gets_the_recorded_output_without_computing():
    module, memo, _ = memoised()
    x = torch.randn(2, 4)
    with memo.recording():
        recorded = module(x, scale=2.0)
    assert module.calls == 1
    assert module(x, scale=2.0) is recorded and module.calls == 1
    # only once: the call after that computes again
    again = module(x, scale=2.0)
    assert module.calls == 2 and torch.equal(again, recorded)


def test_other_arguments_compute_and_drop_the_record():
    module, memo, _ = memoised()
    x = torch.randn(2, 4)
    for call in (lambda: module(x.clone(), scale=2.0), lambda: module(x, scale=3.0), lambda: module(x)):
        with memo.recording():
            recorded = module(x, scale=2.0)
        calls = module.calls
        assert call() is not recorded and module.calls == calls + 1
        assert module(x, scale=2.0) is not recorded  # the mismatched call dropped it


def test_clear_and_remove():
    module, memo, hooks = memoised()
    x = torch.randn(2, 4)
    with memo.recording():
        recorded = module(x)
    memo.clear()
    assert module(x) is not recorded
    hooks.remove()
    assert "forward" not in module.__dict__
