import torch
from torch import nn

import tiny
from stepcache.bench.macs import macs_by_module, macs_of


def test_linear_macs_are_exact():
    layer = nn.Linear(8, 4, bias=False)
    _, macs = macs_of(lambda: layer(torch.randn(3, 8)))
    assert macs == 3 * 8 * 4


def test_attention_on_cpu_is_counted():
    q = torch.randn(1, 2, 16, 8)
    _, macs = macs_of(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert macs == 2 * (16 * 16 * 8) * 2  # heads x (QK^T + AV)


def test_per_module_macs_add_up():
    model = tiny.dit()
    with torch.no_grad():
        _, by_module = macs_by_module(lambda: model(**tiny.model_inputs("dit", model)))
    blocks = [by_module[f"DiTTransformer2DModel.transformer_blocks.{i}"] for i in range(4)]
    assert len(set(blocks)) == 1 and blocks[0] > 0  # identical blocks cost the same
    assert by_module["Global"] > sum(blocks)
