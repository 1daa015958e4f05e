"""TeaCache: exact at threshold 0, skips more as the threshold grows, MAC-exact, CFG branches kept apart."""

import dataclasses
import math
import types

import numpy as np
import pytest
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

import stepcache
import tiny
from stepcache.adapters import UnsupportedModelError, adapter_for
from stepcache.bench.macs import macs_by_module, macs_of
from stepcache.core.hooks import HookSet
from stepcache.methods.teacache import TeaCacheConfig

STEPS = 4
LINEAR = [1.0, 0.0]  # the identity rescale, given explicitly so no warning is raised
SKIP_ALL = TeaCacheConfig(threshold=1e9, coefficients=LINEAR)  # every step but the first and last


CALLS = {
    "dit": lambda: dict(class_labels=[3]),
    "pixart": tiny.pixart_call_kwargs,
    "sd3": tiny.sd3_call_kwargs,
    "flux": tiny.flux_call_kwargs,
}


def pipeline(family: str):
    pipe = getattr(tiny, f"{family}_pipeline")()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, family: str, steps: int) -> torch.Tensor:
    seeded = torch.Generator().manual_seed(0)
    return pipe(**CALLS[family](), num_inference_steps=steps, output_type="pt", generator=seeded).images


@pytest.mark.parametrize("family", ["dit", "pixart", "sd3", "flux"])
def test_threshold_zero_is_bit_identical_and_remove_restores(family):
    pipe = pipeline(family)
    reference = generate(pipe, family, STEPS)
    with stepcache.cached(pipe, TeaCacheConfig(threshold=0.0, coefficients=LINEAR)) as handle:
        assert torch.equal(generate(pipe, family, STEPS), reference)
        assert handle.stats()["cached_steps"] == 0
    with stepcache.cached(pipe, SKIP_ALL) as handle:
        skipping = generate(pipe, family, STEPS)
        assert handle.stats()["cached_step_indices"] == list(range(1, STEPS - 1))
    assert not torch.equal(skipping, reference)
    assert torch.equal(generate(pipe, family, STEPS), reference)


def test_skipping_grows_with_threshold_and_first_and_last_steps_stay_full():
    pipe = pipeline("dit")
    steps = 8
    counts = []
    for threshold in (0.0, 0.2, 0.5, 1e9):
        with stepcache.cached(pipe, TeaCacheConfig(threshold=threshold, coefficients=LINEAR)) as handle:
            generate(pipe, "dit", steps)
            stats = handle.stats()
        trace = stats["accumulated_distance"]
        assert {0, steps - 1} <= set(stats["full_step_indices"])
        assert len(trace) == steps and trace[0] == 0.0
        # a middle step is skipped exactly when its accumulated distance stayed under the threshold
        assert [i for i in range(1, steps - 1) if trace[i] < threshold] == stats["cached_step_indices"]
        counts.append(stats["cached_steps"])
    assert counts == sorted(counts)
    assert counts[0] == 0 and counts[-1] == steps - 2 and 0 < counts[1] < counts[2] < steps - 2


def test_coefficients_rescale_the_distance():
    pipe = pipeline("dit")
    traces = {}
    for coefficients in ([1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]):
        with stepcache.cached(pipe, TeaCacheConfig(threshold=0.0, coefficients=coefficients)) as handle:
            generate(pipe, "dit", STEPS)
            traces[coefficients[0]] = handle.stats()["accumulated_distance"]
    assert traces[2.0] == pytest.approx([2 * x for x in traces[1.0]])
    assert traces[-1.0] == [0.0] * STEPS  # an estimated change is never negative


@pytest.mark.parametrize("family", ["dit", "sd3", "flux"])
def test_executed_macs_match_the_skipped_steps(family):
    pipe, steps = pipeline(family), 8
    _, uncached = macs_by_module(lambda: generate(pipe, family, steps))
    root = type(pipe.transformer).__name__
    names = {id(module): f"{root}.{name}" for name, module in pipe.transformer.named_modules()}
    stack_per_step = sum(uncached[names[id(block)]] for block in adapter_for(pipe.transformer).blocks()) / steps
    with stepcache.cached(pipe, TeaCacheConfig(threshold=0.3, coefficients=LINEAR)) as handle:
        _, macs = macs_of(lambda: generate(pipe, family, steps))
        cached_steps = handle.stats()["cached_steps"]
    assert 0 < cached_steps < steps - 2
    # a skipped step runs no block but computes the signal; a full step's block 0 reuses the
    # signal's norm output instead of computing it again, so only skipped steps add its MACs
    predicted = uncached["Global"] + cached_steps * (_signal_macs(pipe, family) - stack_per_step)
    assert math.isclose(macs, predicted, rel_tol=0.01)


@pytest.mark.parametrize("family", ["dit", "pixart", "sd3", "flux"])
def test_a_full_step_computes_the_signal_norm_once(family):
    pipe, steps = pipeline(family), 5
    norm = adapter_for(pipe.transformer).modulation_norm(adapter_for(pipe.transformer).blocks()[0])
    computed = []
    probe = HookSet()  # under stepcache's wrapper: sees only the calls that really compute
    probe.wrap(norm, lambda original, *a, **k: computed.append(1) or original(*a, **k))
    with stepcache.cached(pipe, TeaCacheConfig(threshold=0.0, coefficients=LINEAR)) as handle:
        generate(pipe, family, steps)
        assert handle.stats()["full_steps"] == steps
    probe.remove()
    assert len(computed) == steps  # once for the signal; block 0 takes that output


def _signal_macs(pipe, family) -> int:
    """MACs of computing the decision signal once, on block 0's real inputs of one call."""
    adapter = adapter_for(pipe.transformer)
    block = adapter.blocks()[0]
    seen = []
    probe = HookSet()
    probe.wrap(block, lambda original, *a, **k: seen.append((a, k)) or original(*a, **k))
    generate(pipe, family, 1)
    probe.remove()
    args, kwargs = seen[0]
    return macs_of(lambda: adapter.modulated_input(block, args, kwargs))[1]


def test_each_call_starts_afresh():
    pipe = pipeline("pixart")
    with stepcache.cached(pipe, TeaCacheConfig(threshold=0.3, coefficients=LINEAR)) as handle:
        first, first_stats = generate(pipe, "pixart", 6), handle.stats()
        second, second_stats = generate(pipe, "pixart", 6), handle.stats()
    assert torch.equal(first, second)
    assert first_stats["cached_steps"] > 0 and first_stats["cache_bytes"] == 0
    assert {**first_stats, "runs": 0} == {**second_stats, "runs": 0}


@pytest.mark.parametrize("family", ["dit", "sd3"])
def test_split_cfg_keeps_a_residual_per_branch(family):
    # skipping every middle step in both CFG modes: split reproduces batched only if each
    # branch adds its own residual (a shared one would mix cond and uncond)
    batched, batched_stats, _ = _cfg_run(family, "batched")
    split, split_stats, split_bytes = _cfg_run(family, "split")
    assert batched_stats["cached_step_indices"] == split_stats["cached_step_indices"] == list(range(1, STEPS - 1))
    tiny.assert_within_rounding(split, batched, tiny.TINY_RUN_EPS)
    model = tiny.MODELS[family]()
    hidden_bytes = (model.config.sample_size // model.config.patch_size) ** 2 * model.inner_dim * 4
    assert split_bytes == 3 * hidden_bytes  # a residual per branch (batch 1), and branch 0's signal


def _cfg_run(family: str, cfg: str):
    """(latents, stats, cache bytes held during step 1) of a hand-written CFG loop skipping every middle step."""
    model, scheduler = tiny.MODELS[family](), tiny.ddim()
    handle = stepcache.apply(model, SKIP_ALL, scheduler=scheduler)
    held = []
    probe = HookSet()
    probe.wrap_method(scheduler, "step", lambda original, *a, **k: held.append(handle.stats()["cache_bytes"])
                      or original(*a, **k))
    latents = tiny.denoise(model, family, scheduler, STEPS, cfg=cfg)
    probe.remove()
    stats = handle.stats()
    handle.remove()
    return latents, stats, held[1]


def test_split_cfg_decides_once_per_step_for_both_branches():
    model, scheduler = tiny.dit(), tiny.ddim()
    handle = stepcache.apply(model, TeaCacheConfig(threshold=0.3, coefficients=LINEAR), scheduler=scheduler)
    ran = []
    probe = HookSet()
    attention = handle.adapter.sublayers(handle.adapter.blocks()[0])["attn"][0]
    probe.wrap(attention, lambda original, *a, **k: ran.append((handle.clock.current.step, handle.clock.current.branch))
               or original(*a, **k))
    tiny.denoise(model, "dit", scheduler, steps=10, cfg="split")
    probe.remove()
    stats = handle.stats()
    handle.remove()
    assert 0 < stats["cached_steps"]
    assert sorted(ran) == [(step, branch) for step in stats["full_step_indices"] for branch in (0, 1)]


def test_bare_model_without_run_length_is_a_clear_error():
    model = tiny.dit()
    with stepcache.cached(model, TeaCacheConfig(coefficients=LINEAR)):
        with pytest.raises(RuntimeError, match="start_run"):
            model(**tiny.model_inputs("dit", model))


def test_hand_written_loop_with_start_run():
    model = tiny.dit()
    inputs = tiny.model_inputs("dit", model)
    with stepcache.cached(model, SKIP_ALL) as handle:
        handle.start_run(3)
        with torch.no_grad():
            for t in (900, 500, 100):
                model(**{**inputs, "timestep": torch.full((2,), t)})
        assert handle.stats()["cached_step_indices"] == [1]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(threshold=-0.1), r"threshold must be a number in \[0.0, inf\]"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(threshold=True), "threshold"),
        (dict(coefficients=[[1.0, 0.0], [2.0, 0.0]]), "coefficients must be a 1-D sequence"),
        (dict(coefficients=[]), "coefficients must be a 1-D sequence"),
        (dict(coefficients=[1.0, float("inf")]), "coefficients must be a 1-D sequence"),
        (dict(coefficients=["a", "b"]), "coefficients must be a 1-D sequence"),
    ],
)
def test_bad_parameters_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeaCacheConfig(**kwargs)


def test_without_coefficients_it_warns_and_uses_the_identity():
    pipe = pipeline("dit")
    with pytest.warns(UserWarning, match="without coefficients"):
        with stepcache.cached(pipe, TeaCacheConfig(threshold=0.0)) as handle:
            assert handle.method.polynomial == (1.0, 0.0)
            assert handle.stats()["calibrated"] is False


def test_u_nets_are_not_supported():
    with pytest.raises(UnsupportedModelError, match=r"TeaCacheConfig needs a model with .*timestep-modulated block input"):
        stepcache.apply(tiny.unet_condition(), TeaCacheConfig(coefficients=LINEAR))


class _TeaCache4FluxState:
    """The attributes TeaCache4FLUX sets on FluxTransformer2DModel (enable_teacache, cnt, num_steps, ...)."""

    def __init__(self, num_steps: int, threshold: float, coefficients):
        self.cnt, self.num_steps, self.rel_l1_thresh, self.coefficients = 0, num_steps, threshold, list(coefficients)
        self.accumulated_rel_l1_distance = 0
        self.previous_modulated_input = self.previous_residual = None
        self.skipped: list[int] = []


def _teacache4flux_forward(self, hidden_states, encoder_hidden_states=None, pooled_projections=None, timestep=None,
                           img_ids=None, txt_ids=None, guidance=None, joint_attention_kwargs=None, return_dict=True,
                           **unused):
    """TeaCache4FLUX's ``teacache_forward`` (TeaCache repository, TeaCache4FLUX/teacache_flux.py), ported to
    diffusers 0.42's FluxTransformer2DModel.forward (whose single-stream blocks take and return both streams);
    without the ControlNet, LoRA-scale and gradient-checkpointing branches, which these tests do not use."""
    state = self._teacache
    hidden_states = self.x_embedder(hidden_states)
    timestep = timestep.to(hidden_states.dtype) * 1000
    guidance = None if guidance is None else guidance.to(hidden_states.dtype) * 1000
    temb = (self.time_text_embed(timestep, pooled_projections) if guidance is None
            else self.time_text_embed(timestep, guidance, pooled_projections))
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    image_rotary_emb = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

    inp = hidden_states.clone()
    temb_ = temb.clone()
    modulated_inp, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.transformer_blocks[0].norm1(inp, emb=temb_)
    if state.cnt == 0 or state.cnt == state.num_steps - 1:
        should_calc = True
        state.accumulated_rel_l1_distance = 0
    else:
        rescale_func = np.poly1d(state.coefficients)
        state.accumulated_rel_l1_distance += rescale_func(((modulated_inp - state.previous_modulated_input).abs().mean()
                                                           / state.previous_modulated_input.abs().mean()).cpu().item())
        if state.accumulated_rel_l1_distance < state.rel_l1_thresh:
            should_calc = False
        else:
            should_calc = True
            state.accumulated_rel_l1_distance = 0
    state.previous_modulated_input = modulated_inp
    if not should_calc:
        state.skipped.append(state.cnt)
    state.cnt += 1
    if state.cnt == state.num_steps:
        state.cnt = 0

    if not should_calc:
        hidden_states += state.previous_residual
    else:
        ori_hidden_states = hidden_states.clone()
        for block in [*self.transformer_blocks, *self.single_transformer_blocks]:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, temb=temb,
                image_rotary_emb=image_rotary_emb, joint_attention_kwargs=joint_attention_kwargs)
        state.previous_residual = hidden_states - ori_hidden_states
    output = self.proj_out(self.norm_out(hidden_states, temb))
    return (output,) if not return_dict else Transformer2DModelOutput(sample=output)


@pytest.mark.parametrize("threshold,coefficients,clamp_matters", [
    (0.4, stepcache.presets.TEACACHE_FLUX_COEFFICIENTS, False),  # the published FLUX polynomial: positive on [0, 1]
    (0.01, (1.0, -0.065), True),  # negative on this tiny model's smaller distances: the reference's sum falls there
])
def test_reference_convention_matches_a_port_of_teacache4flux_bit_for_bit(threshold, coefficients, clamp_matters):
    steps = 10
    pipe = pipeline("flux")
    model = pipe.transformer
    model._teacache = _TeaCache4FluxState(steps, threshold, coefficients)
    model.forward = types.MethodType(_teacache4flux_forward, model)
    expected = generate(pipe, "flux", steps)
    skipped = model._teacache.skipped
    del model.forward, model._teacache
    config = TeaCacheConfig(threshold=threshold, coefficients=coefficients, convention="reference")
    with stepcache.cached(pipe, config) as handle:
        assert torch.equal(generate(pipe, "flux", steps), expected)
        assert handle.stats()["cached_step_indices"] == skipped and 0 < len(skipped) < steps - 2
    # stepcache's convention counts a negative estimate as 0, so it stops skipping sooner
    with stepcache.cached(pipe, dataclasses.replace(config, convention="stepcache")) as handle:
        clamped = generate(pipe, "flux", steps)
        clamped_skipped = handle.stats()["cached_step_indices"]
    assert torch.equal(clamped, expected) is not clamp_matters
    assert (set(clamped_skipped) < set(skipped)) is clamp_matters
