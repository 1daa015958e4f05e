"""FORA: exact at N = 1, MACs as the schedule predicts, per-branch caches, per-call reset, clear errors."""

import pytest
import torch
from transformer_pipes import (
    assert_branches_kept_apart,
    assert_each_call_starts_afresh,
    assert_exact_and_restored,
    assert_macs_match,
    generate,
    hidden_bytes,
    pipeline,
)

import stepcache
import tiny
from stepcache.adapters import adapter_for


@pytest.mark.parametrize("family", ["dit", "pixart", "sd3", "flux"])
def test_interval_one_is_bit_identical_and_remove_restores_exactly(family):
    assert_exact_and_restored(family, stepcache.FORAConfig(interval=1))


@pytest.mark.parametrize(
    "family,sublayers",
    [("dit", None), ("pixart", ("cross_attn", "ff")), ("sd3", None), ("flux", None)],
)
def test_executed_macs_match_the_schedule(family, sublayers):
    roles = sublayers or ("attn", "cross_attn", "ff")

    def skipped(stats, model):
        assert stats["full_step_indices"] == [0, 3]
        adapter = adapter_for(model)
        per_step = [m for b in adapter.blocks() for role, ms in adapter.sublayers(b).items() if role in roles
                    for m in ms]
        # blocks with every sublayer cached compute only the gates of their adaLN-Zero layers:
        # 2 of 6 chunks (1 of 3 in FLUX's single-stream blocks)
        per_step += [(m.linear, 2 / 3) for b in adapter.blocks() if set(adapter.sublayers(b)) <= set(roles)
                     for m in adapter.gate_modulations(b)]
        return per_step * stats["cached_steps"]

    assert_macs_match(family, 4, stepcache.FORAConfig(interval=3, sublayers=sublayers), skipped)


def test_each_pipeline_call_starts_afresh_and_frees_its_caches():
    stats = assert_each_call_starts_afresh("dit", stepcache.FORAConfig(interval=2), 5)
    assert stats["cached_step_indices"] == [1, 3]


@pytest.mark.parametrize("family", ["dit", "sd3"])
def test_split_and_batched_cfg_keep_one_cache_per_branch(family):
    held, stats = assert_branches_kept_apart(family, stepcache.FORAConfig(interval=2), 5)
    assert stats["cached_step_indices"] == [1, 3]
    assert held == [held[0]] * 4 + [0]  # the last full step stores nothing: no later step reuses it
    if family == "dit":  # per block: the attention and the MLP output, for both CFG halves
        assert held[0] == len(tiny.dit().transformer_blocks) * 2 * hidden_bytes("dit", batch=2)


def test_bad_parameters_name_the_allowed_range():
    with pytest.raises(ValueError, match=r"FORAConfig.interval must be an integer in \[1, inf\], got 0"):
        stepcache.FORAConfig(interval=0)
    for sublayers in ("attn", (), ("attn", "attn"), ("mlp",)):
        with pytest.raises(ValueError, match=r"FORAConfig.sublayers must be a non-empty tuple .*'cross_attn'"):
            stepcache.FORAConfig(sublayers=sublayers)
    with pytest.raises(ValueError, match=r"'cross_attn', which no block of this DiTTransformer2DModel has; "
                                         r"allowed here: 'attn', 'ff'"):
        stepcache.apply(tiny.dit(), stepcache.FORAConfig(sublayers=("attn", "cross_attn")))
    pipe = pipeline("dit")
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=4)):
        with pytest.raises(ValueError, match=r"FORAConfig.interval=4 does not fit this run of 4 steps \(allowed 1..3\)"):
            generate(pipe, "dit", 4)


@pytest.mark.parametrize("family", ["dit", "sd3", "flux"])
def test_gate_only_modulation_on_reusing_steps_changes_nothing_but_the_work(family, monkeypatch):
    pipe = pipeline(family)
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=2)) as handle:
        fast = generate(pipe, family, 4)
        assert handle.stats()["gate_only_modulations"] > 0
    # the same run with every adaLN-Zero layer computing all its chunks on reusing steps
    monkeypatch.setattr(type(adapter_for(pipe.transformer)), "gate_modulations", lambda self, block: [])
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=2)) as handle:
        full = generate(pipe, family, 4)
        assert handle.stats()["gate_only_modulations"] == 0
    tiny.assert_within_rounding(fast, full, tiny.TINY_RUN_EPS)


def test_modulation_runs_in_full_when_a_sublayer_it_feeds_still_runs():
    # caching only the attention leaves the MLP running, which needs norm1's MLP shift and scale
    with stepcache.cached(pipeline("dit"), stepcache.FORAConfig(interval=2, sublayers=("attn",))) as handle:
        assert handle.stats()["gate_only_modulations"] == 0


class LoraLinear(torch.nn.Module):
    """A low-rank adapter around a linear layer, as peft injects one: base(x) + B(A(x))."""

    def __init__(self, base: torch.nn.Linear, rank: int = 2):
        super().__init__()
        self.base_layer = base
        self.lora_A = torch.nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = torch.nn.Linear(rank, base.out_features, bias=False)
        torch.nn.init.normal_(self.lora_B.weight, std=0.5)

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x))

    def merged(self) -> torch.nn.Linear:
        merged = torch.nn.Linear(self.base_layer.in_features, self.base_layer.out_features)
        with torch.no_grad():
            merged.weight.copy_(self.base_layer.weight + self.lora_B.weight @ self.lora_A.weight)
            merged.bias.copy_(self.base_layer.bias)
        return merged


@pytest.mark.parametrize("family", ["dit", "sd3", "flux"])
def test_a_lora_on_the_adaln_projections_applies_on_reusing_steps(family):
    pipe = pipeline(family)
    adapter = adapter_for(pipe.transformer)
    torch.manual_seed(1)
    layers = [m for block in adapter.blocks() for m in adapter.gate_modulations(block)]
    for layer in layers:
        layer.linear = LoraLinear(layer.linear)
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=2)) as handle:
        live = generate(pipe, family, 4)
        assert handle.stats()["cached_steps"] > 0
    for layer in layers:
        layer.linear = layer.linear.merged()
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=2)) as handle:
        merged = generate(pipe, family, 4)
        assert handle.stats()["gate_only_modulations"] > 0
    # the LoRA and its merged weights compute the same gates up to rounding
    tiny.assert_within_rounding(live, merged, tiny.TINY_RUN_EPS)


def _fora_reference_port(pipe, steps, interval):
    """FORA's ``boost_infer_static`` (its repository's src/models.py, DiTBlock.forward) on diffusers' DiT blocks.

    The reference loop counts its steps down (i = T-1 .. 0, gaussian_diffusion.py); every block computes
    its adaLN modulation, and its attention and MLP outputs (before their gates) are computed and cached
    when ``i == T-1 or i % N == 0`` and taken from the cache otherwise. Installed as plain forward
    replacements, none of stepcache's machinery; returns a function that undoes it.
    """
    calls = [0]  # denoiser calls so far: one per step (the DiT pipeline batches its CFG halves)
    cache = {}
    modules = [(layer, name, getattr(block, name)) for layer, block in enumerate(pipe.transformer.transformer_blocks)
               for name in ("attn1", "ff")]
    for layer, name, module in modules:
        def forward(*args, _key=(layer, name), _original=module.forward, **kwargs):
            i = steps - 1 - calls[0]
            if i == steps - 1 or i % interval == 0:
                cache[_key] = _original(*args, **kwargs)
            return cache[_key]

        module.forward = forward
    counter = pipe.transformer.register_forward_hook(lambda module, args, output: calls.__setitem__(0, calls[0] + 1))

    def remove():
        counter.remove()
        for _, _, module in modules:
            del module.forward

    return remove


@pytest.mark.parametrize("steps,interval", [(8, 3), (7, 4), (5, 3), (9, 2), (4, 6)])
def test_reference_convention_matches_a_port_of_foras_code_bit_for_bit(steps, interval):
    pipe = pipeline("dit")
    remove = _fora_reference_port(pipe, steps, interval)
    expected = generate(pipe, "dit", steps)
    remove()
    config = stepcache.FORAConfig(interval=interval, convention="reference")
    with stepcache.cached(pipe, config) as handle:
        assert torch.equal(generate(pipe, "dit", steps), expected)
        stats = handle.stats()
    full = [j for j in range(steps) if j == 0 or (steps - 1 - j) % interval == 0]
    assert stats["full_step_indices"] == full and full[-1] == steps - 1
    assert stats["gate_only_modulations"] == 0  # the reference computes every adaLN chunk
    if (steps - 1) % interval and interval < steps:  # forward counting refreshes at other steps (N < T only)
        with stepcache.cached(pipe, stepcache.FORAConfig(interval=interval)) as handle:
            assert not torch.equal(generate(pipe, "dit", steps), expected)
            assert handle.stats()["full_step_indices"] == list(range(0, steps, interval))
