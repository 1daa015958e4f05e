"""What every method shares: warm-up and cool-down steps run in full; reusing methods forecast
(order 1, 2) from the last full steps, keeping order+1 values per cached tensor."""

import pytest
import torch

import stepcache
import tiny
from stepcache.adapters import adapter_for
from transformer_pipes import generate, pipeline

STEPS = 8


def _sd_pipeline():
    pipe = tiny.sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sd_generate(pipe, steps):
    with torch.no_grad():
        return pipe(**tiny.sd_call_kwargs(), num_inference_steps=steps, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images


# method -> (pipeline, generate, config factory taking the shared options); each caches in an 8-step run
REUSERS = {
    "fora": (lambda: pipeline("dit"), lambda p, s: generate(p, "dit", s),
             lambda **o: stepcache.FORAConfig(interval=2, **o)),
    "delta_dit": (lambda: pipeline("dit"), lambda p, s: generate(p, "dit", s),
                  lambda **o: stepcache.DeltaDiTConfig(interval=2, blocks=(1, 3), **o)),
    "teacache": (lambda: pipeline("dit"), lambda p, s: generate(p, "dit", s),
                 lambda **o: stepcache.TeaCacheConfig(threshold=100.0, coefficients=[1.0, 0.0], **o)),
    "adacache": (lambda: pipeline("dit"), lambda p, s: generate(p, "dit", s),
                 lambda **o: stepcache.AdaCacheConfig(codebook=((100.0, 2),), **o)),
    "deepcache": (_sd_pipeline, _sd_generate, lambda **o: stepcache.DeepCacheConfig(interval=2, **o)),
}


def _run(name, **options):
    build, run, config = REUSERS[name]
    pipe = build()
    with stepcache.cached(pipe, config(**options)) as handle:
        output = run(pipe, STEPS)
        return output, handle.stats()


@pytest.mark.parametrize("name", REUSERS)
def test_warmup_and_cooldown_steps_run_in_full(name):
    _, plain = _run(name)
    _, stats = _run(name, warmup=3, cooldown=2)
    assert min(plain["cached_step_indices"]) < 3 or max(plain["cached_step_indices"]) >= STEPS - 2
    assert stats["cached_step_indices"] and all(3 <= s < STEPS - 2 for s in stats["cached_step_indices"])


def test_tgate_runs_warmup_and_cooldown_steps_in_full():
    pipe = _sd_pipeline()
    reference = _sd_generate(pipe, STEPS)
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=2, self_attn_interval=2, warmup=2,
                                                      cooldown=3)) as handle:
        _sd_generate(pipe, STEPS)
        stats = handle.stats()
    assert stats["self_attn_reused_steps"] == [] and stats["cross_attn_reused_steps"] == [2, 3, 4]
    assert stats["cached_step_indices"] == [2, 3, 4]
    with stepcache.cached(pipe, stepcache.TGateConfig(gate_step=2, warmup=STEPS)):
        assert torch.equal(_sd_generate(pipe, STEPS), reference)


@pytest.mark.parametrize("name", REUSERS)
def test_a_forecast_keeps_order_plus_one_values_and_changes_the_output(name):
    outputs, peaks = {}, {}
    for order in (0, 1, 2):
        # three warm-up steps give every method three full steps to fit a parabola through
        outputs[order], stats = _run(name, order=order, warmup=3)
        assert stats["cached_steps"] > 0 and stats["cache_bytes"] == 0
        peaks[order] = stats["peak_cache_bytes"]
    # each order adds one value per forecast tensor (TeaCache also keeps its signal, unforecast)
    assert peaks[2] - peaks[1] == peaks[1] - peaks[0] > 0, peaks
    if name in ("fora", "adacache", "deepcache"):  # nothing else is cached
        assert peaks[1] == 2 * peaks[0] and peaks[2] == 3 * peaks[0], peaks
    assert not torch.equal(outputs[1], outputs[0]) and not torch.equal(outputs[2], outputs[1])


@pytest.mark.parametrize("name", REUSERS)
def test_forecasting_no_cache_settings_stay_bit_identical(name):
    build, run, config = REUSERS[name]
    pipe = build()
    reference = run(pipe, STEPS)
    with stepcache.cached(pipe, config(order=2, warmup=STEPS)) as handle:
        assert torch.equal(run(pipe, STEPS), reference)
        assert handle.stats()["cached_steps"] == 0


def test_fora_reuse_steps_get_the_line_through_the_last_two_full_steps():
    pipe = pipeline("dit")
    attention = adapter_for(pipe.transformer).sublayers(pipe.transformer.transformer_blocks[1])["attn"][0]
    seen = []
    attention.register_forward_hook(lambda module, args, output: seen.append(output))
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=2, order=1)) as handle:
        generate(pipe, "dit", STEPS)
        assert handle.stats()["cached_step_indices"] == [1, 3, 5, 7]
    # full steps 0, 2, 4, 6 computed; step 3 extrapolates from 0 and 2, step 5 from 2 and 4
    for step in (3, 5, 7):
        line = seen[step - 1] + (seen[step - 1] - seen[step - 3]) / 2
        tiny.assert_within_rounding(seen[step], line, tiny.ONE_CALL_EPS)
    assert torch.equal(seen[1], seen[0])  # one full step so far: plain reuse


@pytest.mark.parametrize("field,value", [("warmup", -1), ("cooldown", 1.5), ("order", 4), ("order", -1)])
def test_bad_shared_options_name_the_allowed_range(field, value):
    with pytest.raises(ValueError, match=f"FORAConfig.{field} must be an integer in"):
        stepcache.FORAConfig(**{field: value})


def test_shared_options_are_keyword_only_so_positions_stay():
    assert stepcache.FORAConfig(2).interval == 2
    with pytest.raises(TypeError):
        stepcache.TGateConfig(order=1)  # T-GATE reuses nothing it could forecast


@pytest.mark.parametrize("name", REUSERS)
def test_reference_convention_keeps_the_shared_options(name):
    build, run, config = REUSERS[name]
    pipe = build()
    reference = run(pipe, STEPS)
    with stepcache.cached(pipe, config(convention="reference", order=1, warmup=STEPS)) as handle:
        assert torch.equal(run(pipe, STEPS), reference)  # every step full: the uncached output, bit for bit
        assert handle.stats()["cached_steps"] == 0
    _, stats = _run(name, warmup=3, cooldown=2, order=1, convention="reference")
    assert stats["cached_step_indices"] and all(3 <= s < STEPS - 2 for s in stats["cached_step_indices"])


@pytest.mark.parametrize("name", sorted(stepcache.METHODS))
def test_every_config_takes_a_convention_keyword(name):
    cls = stepcache.METHODS[name]
    assert cls().convention == "stepcache" and not cls().reference
    assert cls(convention="reference").reference
    with pytest.raises(ValueError, match=rf"{cls.__name__}.convention must be one of 'stepcache', 'reference', "
                                         r"got 'paper'"):
        cls(convention="paper")
