import torch
from torch import nn

from stepcache.core.hooks import HookSet
from stepcache.core.reuse import ReuseSlot


class Counting(nn.Linear):
    runs = 0

    def forward(self, x):
        Counting.runs += 1
        return super().forward(x)


def test_slot_stores_then_reuses_without_running_the_modules_and_leaves_them_clean():
    layers = [Counting(2, 2), Counting(2, 2)]
    before = [sorted(layer.__dict__) for layer in layers]
    slot, hooks = ReuseSlot(layers), HookSet()
    slot.install(hooks)
    x = torch.randn(1, 2)
    slot.store()
    first = [layer(x) for layer in layers]
    stored = slot.stored()
    assert [stored[0], stored[1]] == first and Counting.runs == 2
    slot.reuse(stored)
    assert [layer(torch.zeros(1, 2)) for layer in layers] == first  # the stored outputs
    assert Counting.runs == 2  # and the modules did not run
    slot.reset()
    assert torch.equal(layers[0](x), first[0]) and Counting.runs == 3
    hooks.remove()
    assert [sorted(layer.__dict__) for layer in layers] == before
