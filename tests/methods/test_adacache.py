"""AdaCache: exactness without reuse, a schedule that follows the codebook, MACs, CFG and batches."""

import dataclasses
import functools

import pytest
import torch

import stepcache
import tiny
from transformer_pipes import assert_each_call_starts_afresh
from stepcache.adapters import adapter_for
from stepcache.bench.macs import macs_by_module, macs_of
from stepcache.core.schedules import adacache_reuse_length

STEPS = 8
PIPELINES = {
    "dit": (tiny.dit_pipeline, lambda: dict(class_labels=[1])),
    "pixart": (tiny.pixart_pipeline, tiny.pixart_call_kwargs),
    "sd3": (tiny.sd3_pipeline, tiny.sd3_call_kwargs),
    "flux": (tiny.flux_pipeline, tiny.flux_call_kwargs),
}
NO_REUSE = ((1e9, 1),)
ALWAYS_3 = ((1e9, 3),)


def _generate(pipe, call_kwargs, samples=1, steps=STEPS):
    # one generator per sample, so a sample starts from the same noise alone and in a batch
    generator = [torch.Generator().manual_seed(0) for _ in range(samples)]
    with torch.no_grad():
        images = pipe(**call_kwargs(), num_inference_steps=steps, output_type="latent", generator=generator).images
    return torch.as_tensor(images)  # DiTPipeline hands back numpy


def _check_schedule(stats, codebook):
    """Every gap between full steps is what the codebook gives the rate measured at the earlier one."""
    full = stats["full_step_indices"]
    assert full[:2] == [0, 1]  # a rate needs two full steps
    assert stats["reuse_lengths"][0] == 1
    for rate, length, (start, nxt) in zip(stats["rates"], stats["reuse_lengths"][1:], zip(full[1:], full[2:])):
        assert length == adacache_reuse_length(rate, codebook) == nxt - start


@pytest.mark.parametrize("name", PIPELINES)
def test_no_reuse_is_bit_identical_and_remove_restores(name):
    build, call_kwargs = PIPELINES[name]
    pipe = build()
    reference = _generate(pipe, call_kwargs)
    with stepcache.cached(pipe, stepcache.AdaCacheConfig(codebook=NO_REUSE)) as handle:
        assert torch.equal(_generate(pipe, call_kwargs), reference)
        assert handle.stats()["cached_steps"] == 0 and len(handle.stats()["rates"]) == STEPS - 2
    handle = stepcache.apply(pipe, stepcache.AdaCacheConfig(codebook=ALWAYS_3))
    assert not torch.equal(_generate(pipe, call_kwargs), reference)
    assert handle.stats()["full_step_indices"] == [0, 1, 4, 7]
    handle.remove()
    assert torch.equal(_generate(pipe, call_kwargs), reference)


@pytest.mark.parametrize("name,blocks", [("dit", None), ("pixart", (1, 3)), ("flux", (0, 3))])
def test_macs_follow_the_measured_schedule(name, blocks):
    build, call_kwargs = PIPELINES[name]
    pipe = build()
    model = pipe.transformer
    _, by_module = macs_by_module(lambda: _generate(pipe, call_kwargs))
    names = {module: f"{type(model).__name__}.{n}" for n, module in model.named_modules()}
    skipped = adapter_for(model).blocks()[slice(*blocks) if blocks else slice(None)]
    range_macs = sum(by_module[names[block]] for block in skipped) / STEPS
    # a codebook the tiny models' rates fall into, so the schedule is data-driven
    codebook = ((0.5, 3), (2.0, 2))
    with stepcache.cached(pipe, stepcache.AdaCacheConfig(codebook=codebook, blocks=blocks)) as handle:
        _, executed = macs_of(lambda: _generate(pipe, call_kwargs))
        stats = handle.stats()
    _check_schedule(stats, codebook)
    assert stats["cached_steps"] > 0
    predicted = by_module["Global"] - stats["cached_steps"] * range_macs
    assert abs(executed - predicted) <= 0.01 * predicted


def test_batch_takes_the_most_conservative_rate():
    pipe = tiny.dit_pipeline()
    rates = {}
    with stepcache.cached(pipe, stepcache.AdaCacheConfig(codebook=NO_REUSE)) as handle:
        for labels in ([1], [7], [1, 7]):
            _generate(pipe, lambda: dict(class_labels=labels), samples=len(labels))
            rates[len(labels), labels[0] if len(labels) == 1 else None] = handle.stats()["rates"]
    alone = [rates[1, 1], rates[1, 7]]
    # both-sample rates are the per-step maximum of the samples' own rates
    assert alone[0] != alone[1]
    tiny.assert_within_rounding(rates[2, None], [max(a, b) for a, b in zip(*alone)], tiny.ONE_CALL_EPS)


def test_split_and_batched_cfg_share_a_schedule_and_keep_branch_caches_apart():
    results, schedules = {}, {}
    for cfg in ("batched", "split"):
        model, scheduler = tiny.dit(), tiny.ddim()
        with stepcache.cached(model, stepcache.AdaCacheConfig(codebook=((0.5, 3), (2.0, 2))),
                              scheduler=scheduler) as handle:
            results[cfg] = tiny.denoise(model, "dit", scheduler, steps=STEPS, cfg=cfg)
            schedules[cfg] = handle.stats()["full_step_indices"]
            assert handle.stats()["cached_steps"] > 0
    assert schedules["split"] == schedules["batched"]
    # a shared residual would give the uncond branch the cond branch's residual
    tiny.assert_within_rounding(results["split"], results["batched"], tiny.TINY_RUN_EPS)


def test_each_pipeline_call_starts_afresh():
    assert_each_call_starts_afresh("pixart", stepcache.AdaCacheConfig(codebook=((0.5, 3), (2.0, 2))), STEPS)


def test_refused_on_unets_and_out_of_range_blocks():
    with pytest.raises(stepcache.UnsupportedModelError):
        stepcache.apply(tiny.unet_condition(), stepcache.AdaCacheConfig())
    with pytest.raises(ValueError, match="not inside the model's 4 blocks"):
        stepcache.apply(tiny.dit(), stepcache.AdaCacheConfig(blocks=(2, 6)))


@pytest.mark.parametrize("field,value,message", [
    ("codebook", (), "non-empty tuple"),
    ("codebook", ((0.05, 2), (0.03, 4)), "strictly increasing thresholds"),
    ("codebook", ((0.03, 2), (0.05, 4)), "non-increasing"),
    ("codebook", ((0.0, 2),), r"threshold must be a number in \(0.0, inf\]"),
    ("codebook", ((0.1, 0),), r"length must be an integer in \[1, inf\]"),
    ("codebook", (0.1, 2), r"\(threshold, length\) pairs"),
    ("blocks", (3, 3), r"blocks end must be an integer in \[4, inf\]"),
    ("blocks", (-1, 2), r"blocks start must be an integer in \[0, inf\]"),
])
def test_bad_parameters_name_the_allowed_range(field, value, message):
    with pytest.raises(ValueError, match=f"AdaCacheConfig.{field}.*{message}|{message}"):
        stepcache.AdaCacheConfig(**{field: value})


class _AdaCachePort:
    """AdaCache's caching (AdaCache repository, opensora/models/stdit/stdit3.py: STDiT3Block.forward with
    cache_res "t-attn", STDiT3.forward's ada_dict) ported to diffusers' DiT blocks (BasicTransformerBlock,
    "ada_norm_zero", no cross-attention, so the "ca-mlp" residual is the MLP's).

    Every block counts its calls (fwd_id, from 1) and runs its attention and MLP at fwd_id 1, T-1, T and
    when fwd_id = its last computing call + the model's cache rate; otherwise it adds the gated residuals
    it cached. Blocks in ``cache_loc`` turn the relative L1 change of their gated attention residual,
    divided by the rate, into the next rate through the codebook (the first five thresholds; else the
    last entry). Plain forward replacements, none of stepcache's machinery.

    ``moreg``: the repository's motion regularisation (``compute_next_step`` with apply_moreg), a dict of
    its ``moreg_strides``, ``moreg_steps``, ``moreg_hyp``, ``mograd_mul`` and ``spatial_dim`` (tokens per frame).
    """

    def __init__(self, model, num_steps, codebook, cache_loc, moreg=None):
        self.model, self.num_sampling_steps, self.cache_loc = model, num_steps, cache_loc
        self.codebook = dict(codebook)
        self.moreg = moreg
        self.prev_moreg = [1.0] * len(model.transformer_blocks)  # per block, set once as the repository's __init__
        self.fwd_id, self.attn_cache_rate = 0, 1
        self.rates, self.recomputed_steps = [], []
        self.ada_dict = None
        self.blocks = [dict(fwd_id=0, prev_compute_step=0, st_attn_cache=0, ca_mlp_cache=0)
                       for _ in model.transformer_blocks]
        for blk_id, block in enumerate(model.transformer_blocks):
            block.forward = functools.partial(self._block_forward, block, blk_id)
        self._hooks = [model.register_forward_pre_hook(self._model_start),
                       model.register_forward_hook(self._model_end)]

    def remove(self):
        for hook in self._hooks:
            hook.remove()
        for block in self.model.transformer_blocks:
            del block.forward

    def _model_start(self, module, args):
        self.ada_dict = {"avg_diff": 0, "count": 0, "attn_cache_rate": self.attn_cache_rate,
                         "new_attn_cache_rate": self.attn_cache_rate}

    def _model_end(self, module, args, output):
        if self.ada_dict["count"]:
            self.rates.append(float(self.ada_dict["rate"]))  # the rate behind the next cache rate
        self.attn_cache_rate = self.ada_dict["new_attn_cache_rate"]
        self.fwd_id += 1
        if self.fwd_id == self.num_sampling_steps:
            self.fwd_id, self.attn_cache_rate = 0, 1

    def _compute_next_step(self, cache, res, prev_rate, blk_id, fwd_id):
        ada_dict = self.ada_dict
        cache_diff = (cache - res).norm(dim=(0, 1, 2), p=1) / cache.norm(dim=(0, 1, 2), p=1)
        cache_diff = cache_diff / prev_rate
        cache_diff = (cache_diff + ada_dict["count"] * ada_dict["avg_diff"]) / (ada_dict["count"] + 1)
        ada_dict["avg_diff"], ada_dict["count"] = cache_diff, ada_dict["count"] + 1
        if self.moreg is not None:
            strides, steps, hyp = self.moreg["moreg_strides"], self.moreg["moreg_steps"], self.moreg["moreg_hyp"]
            spatial_dim = self.moreg["spatial_dim"]
            if steps[0] <= fwd_id <= steps[1]:
                moreg = 0
                for i in strides:
                    moreg_i = (res[:, i * spatial_dim:, :] - res[:, :-i * spatial_dim, :]).norm(p=1)
                    moreg_i /= (res[:, i * spatial_dim:, :].norm(p=1) + res[:, :-i * spatial_dim, :].norm(p=1))
                    moreg += moreg_i
                moreg = moreg / len(strides)
                moreg = ((1 / hyp[0] * moreg) ** hyp[1]) / hyp[2]
            else:
                moreg = 1.
            mograd = self.moreg["mograd_mul"] * (moreg - self.prev_moreg[blk_id]) / prev_rate
            self.prev_moreg[blk_id] = moreg
            moreg = moreg + abs(mograd)
            cache_diff = cache_diff * moreg
        ada_dict["rate"] = cache_diff
        metric_thres, cache_rates = list(self.codebook.keys()), list(self.codebook.values())
        return next((rate for thres, rate in zip(metric_thres[:5], cache_rates[:5]) if cache_diff < thres),
                    cache_rates[-1])

    def _block_forward(self, block, blk_id, hidden_states, attention_mask=None, encoder_hidden_states=None,
                       encoder_attention_mask=None, timestep=None, cross_attention_kwargs=None, class_labels=None,
                       added_cond_kwargs=None):
        state, x = self.blocks[blk_id], hidden_states
        norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1(
            x, timestep, class_labels, hidden_dtype=x.dtype)
        state["fwd_id"] += 1
        fwd_id = state["fwd_id"]
        skip_cache_steps = [1, self.num_sampling_steps - 1, self.num_sampling_steps]
        attn_cache_rate = self.ada_dict["attn_cache_rate"]
        active = fwd_id == state["prev_compute_step"] + attn_cache_rate or fwd_id in skip_cache_steps
        if active:
            attn_res = gate_msa.unsqueeze(1) * block.attn1(norm_hidden_states)
            x = x + attn_res
            if isinstance(state["st_attn_cache"], torch.Tensor) and blk_id in self.cache_loc:
                self.ada_dict["new_attn_cache_rate"] = self._compute_next_step(
                    state["st_attn_cache"], attn_res, attn_cache_rate, blk_id, fwd_id)
            if blk_id == 0:
                self.recomputed_steps.append(fwd_id - 1)
            state["st_attn_cache"], state["prev_compute_step"] = attn_res, fwd_id
            norm_hidden_states = block.norm3(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            mlp_res = gate_mlp.unsqueeze(1) * block.ff(norm_hidden_states)
            x = x + mlp_res
            state["ca_mlp_cache"] = mlp_res
        else:
            x = x + state["st_attn_cache"]
            x = x + state["ca_mlp_cache"]
        if fwd_id == self.num_sampling_steps:
            self.blocks[blk_id] = dict(fwd_id=0, prev_compute_step=0, st_attn_cache=0, ca_mlp_cache=0)
        return x


# The port adds each block's two cached residuals where stepcache adds the stack's residual once: the same
# sum, rounded differently. Measured 2026-11-25 over ATEN_CPU_CAPABILITY default/avx2/avx512 x 1/2 threads on
# the runs below, in float32 epsilons of max |expected|: images 2.25, rates 0.48; the bound is 8x the worst.
ADACACHE_PORT_EPS = 18


def port_then_stepcache(pipe, port, config, steps):
    """The port's images (the port is then removed), and stepcache's images and stats under ``config``."""
    expected = _generate(pipe, lambda: dict(class_labels=[1]), steps=steps)
    port.remove()
    with stepcache.cached(pipe, config) as handle:
        return expected, _generate(pipe, lambda: dict(class_labels=[1]), steps=steps), handle.stats()


@pytest.mark.parametrize("steps,preset,cache_loc", [
    (12, "adacache-fast", None),
    (12, "adacache-slow", None),
    (16, "adacache-fast", (1, 2)),
])
def test_reference_convention_follows_a_port_of_adacaches_code(steps, preset, cache_loc):
    pipe = tiny.dit_pipeline()
    model = pipe.transformer
    config = stepcache.presets.get(preset, signal_blocks=cache_loc)
    middle = (len(model.transformer_blocks) - 1) // 2
    port = _AdaCachePort(model, steps, config.codebook, cache_loc or (middle,))
    expected, images, stats = port_then_stepcache(pipe, port, config, steps)
    # the schedule exactly; the rates and outputs up to the rounding of the residual additions
    assert stats["full_step_indices"] == port.recomputed_steps
    assert stats["cached_steps"] > 0 and {0, steps - 2, steps - 1} <= set(port.recomputed_steps)
    # stepcache reads no rate at the last full step: no step after it needs one
    assert len(stats["rates"]) == len(port.rates) - 1
    tiny.assert_within_rounding(stats["rates"], port.rates[:-1], ADACACHE_PORT_EPS)
    tiny.assert_within_rounding(images, expected, ADACACHE_PORT_EPS)
    # stepcache's convention (the stack's residual, per-sample maximum, the actual gaps) schedules otherwise
    with stepcache.cached(pipe, dataclasses.replace(config, convention="stepcache", signal_blocks=None)) as handle:
        _generate(pipe, lambda: dict(class_labels=[1]), steps=steps)
        assert handle.stats()["full_step_indices"] != port.recomputed_steps


def test_reference_rates_are_the_ports_bit_for_bit_while_nothing_is_reused():
    steps = 10
    pipe = tiny.dit_pipeline()
    port = _AdaCachePort(pipe.transformer, steps, {1e9: 1}, (1, 3))
    expected = _generate(pipe, lambda: dict(class_labels=[1]), steps=steps)
    port.remove()
    config = stepcache.AdaCacheConfig(codebook=NO_REUSE, signal_blocks=(3, 1), convention="reference")
    with stepcache.cached(pipe, config) as handle:
        assert torch.equal(_generate(pipe, lambda: dict(class_labels=[1]), steps=steps), expected)
        stats = handle.stats()
    assert stats["rates"] == port.rates[:-1] and stats["signal_blocks"] == [1, 3]


@pytest.mark.parametrize("name,middle", [("dit", 1), ("pixart", 1), ("sd3", 1), ("flux", 0)])
def test_reference_convention_on_every_family(name, middle):
    build, call_kwargs = PIPELINES[name]
    pipe = build()
    reference = _generate(pipe, call_kwargs)
    config = stepcache.AdaCacheConfig(codebook=NO_REUSE, convention="reference")
    with stepcache.cached(pipe, config) as handle:
        assert torch.equal(_generate(pipe, call_kwargs), reference)
        stats = handle.stats()
    # the middle block with a gated attention of its own (FLUX: of its two dual-stream blocks)
    assert stats["signal_blocks"] == [middle] and len(stats["rates"]) == STEPS - 2
    assert all(rate > 0 for rate in stats["rates"])
    with stepcache.cached(pipe, stepcache.presets.get("adacache-fast")) as handle:
        _generate(pipe, call_kwargs)
        full = handle.stats()["full_step_indices"]
    assert full[:2] == [0, 1] and full[-2:] == [STEPS - 2, STEPS - 1] and len(full) < STEPS


def test_reference_signal_errors():
    with pytest.raises(ValueError, match="signal_blocks is read only by convention='reference'"):
        stepcache.AdaCacheConfig(signal_blocks=(1,))
    with pytest.raises(ValueError, match="signal_blocks must be None or a non-empty tuple of distinct"):
        stepcache.AdaCacheConfig(signal_blocks=(1, 1), convention="reference")
    with pytest.raises(ValueError, match=r"has 2, which is not a block of this FluxTransformer2DModel with a gated "
                                         r"self-attention; allowed: \[0, 1\]"):
        stepcache.apply(tiny.flux(), stepcache.AdaCacheConfig(signal_blocks=(2,), convention="reference"))
    with pytest.raises(RuntimeError, match="keeps the last two steps full"):
        model = tiny.dit()
        with stepcache.cached(model, stepcache.AdaCacheConfig(convention="reference")), torch.no_grad():
            model(**tiny.model_inputs("dit", model))


def test_codebook_fallback_of_each_convention():
    codebook = stepcache.presets.get("adacache-100").codebook  # last entry (1.00, 3)
    assert adacache_reuse_length(0.5, codebook) == adacache_reuse_length(0.5, codebook, reference=True) == 3
    # at or above every threshold: stepcache runs the next step in full, the reference reuses for the last length
    assert adacache_reuse_length(2.0, codebook) == 1 and adacache_reuse_length(2.0, codebook, reference=True) == 3
    assert adacache_reuse_length(0.04, codebook) == adacache_reuse_length(0.04, codebook, reference=True) == 10
