"""AdaCache: exactness without reuse, a schedule that follows the codebook, MACs, CFG and batches."""

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


def _generate(pipe, call_kwargs, samples=1):
    # one generator per sample, so a sample starts from the same noise alone and in a batch
    generator = [torch.Generator().manual_seed(0) for _ in range(samples)]
    with torch.no_grad():
        images = pipe(**call_kwargs(), num_inference_steps=STEPS, output_type="latent", generator=generator).images
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
