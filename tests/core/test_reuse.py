import torch
from torch import nn

from stepcache.core.hooks import HookSet
from stepcache.core.reuse import ReuseSlot


class Counting(nn.Linear):
    runs = 0

    def forward(self, x):
        Counting.runs += 1
        return super().forward(x)


def test_slot_stores_then_reuses_without_running_the_modules():
    layers = [Counting(2, 2), Counting(2, 2)]
    slot, hooks = ReuseSlot(), HookSet()
    for index, layer in enumerate(layers):
        hooks.wrap(layer, slot.hook(index))
    x = torch.randn(1, 2)
    stored = {}
    slot.store = stored
    first = [layer(x) for layer in layers]
    assert [stored[0], stored[1]] == first and Counting.runs == 2
    slot.reuse, slot.store = stored, None
    assert [layer(torch.zeros(1, 2)) for layer in layers] == first  # the stored outputs
    assert Counting.runs == 2  # and the modules did not run
    slot.reset()
    assert torch.equal(layers[0](x), first[0]) and Counting.runs == 3
    hooks.remove()
