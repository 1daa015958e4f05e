import pytest

from stepcache import FORAConfig, apply
from stepcache.bench import arch, stepcost


def shrunk_dit():
    model = arch.build("dit-xl-2", num_layers=2, num_attention_heads=2, attention_head_dim=8)
    return model, arch.ARCHS["dit-xl-2"][2](model, 1)


def test_cached_step_is_measured_with_the_method_applied_and_then_removed():
    model, call = shrunk_dit()
    result = stepcost.cached_step_cost(model, call, FORAConfig(interval=2), latent_size=8, repeats=1)
    # FORA skips attention and MLP on the cached step but keeps the modulation: fewer MACs, not none
    assert 0 < result["mac_fraction"] < 0.5 and result["full_s"] > 0 and result["cached_s"] > 0
    assert result["wall_fraction"] == pytest.approx(result["cached_s"] / result["full_s"])
    apply(model, FORAConfig(interval=2)).remove()  # the measurement's own cache was removed


def test_a_config_that_does_not_cache_step_one_is_an_error():
    model, call = shrunk_dit()
    with pytest.raises(stepcost.NotCaching, match="does not cache step 1"):
        stepcost.cached_step_cost(model, call, FORAConfig(interval=1), latent_size=8, repeats=1)


def test_python_m_stepcost_is_the_stepcost_command(capsys):
    assert stepcost.main(["--model", "arch:nope"]) == 2
    assert "stepcache stepcost: error: unknown model arch:nope" in capsys.readouterr().err


def test_hook_overhead_times_a_config_that_caches_nothing_and_removes_it():
    model, call = shrunk_dit()
    result = stepcost.hook_overhead(model, call, FORAConfig(interval=1), latent_size=8, repeats=3)
    low, high = result["quartiles"]
    assert result["pairs"] == 3 and low <= result["overhead"] <= high and result["overhead"] > -1
    apply(model, FORAConfig(interval=1)).remove()  # nothing of the measurement's hooks is left


def test_hook_overhead_of_a_config_that_caches_is_an_error():
    model, call = shrunk_dit()
    with pytest.raises(stepcost.NotCaching, match="turn its caching off"):
        stepcost.hook_overhead(model, call, FORAConfig(interval=2), latent_size=8, repeats=1)
