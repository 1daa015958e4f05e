"""apply() / remove() / cached(): exact restoration, clear errors, stats."""

import pytest
import torch
from probe import ProbeConfig
from torch import nn

import stepcache
import tiny


def _state(model: nn.Module):
    """Everything remove() must restore: every module's own attributes and every tensor."""
    attrs = {name: sorted(module.__dict__) for name, module in model.named_modules()}
    return attrs, {k: v.clone() for k, v in model.state_dict().items()}


def _run(model, family):
    with torch.no_grad():
        out = model(**tiny.model_inputs(family, model))
    return out[0] if isinstance(out, tuple) else out.sample


@pytest.mark.parametrize("family", list(tiny.MODELS))
def test_apply_then_remove_is_bit_identical_and_leaves_nothing_behind(family):
    model = tiny.MODELS[family]()
    reference = _run(model, family)
    attrs, tensors = _state(model)
    handle = stepcache.apply(model, ProbeConfig())
    hooked = _run(model, family)
    handle.remove()
    assert torch.equal(hooked, reference)  # a pass-through hook changes nothing
    assert torch.equal(_run(model, family), reference)
    after_attrs, after_tensors = _state(model)
    assert after_attrs == attrs
    assert all(torch.equal(after_tensors[k], v) for k, v in tensors.items())


def test_a_pipeline_is_hooked_only_through_its_call_and_remove_restores_its_class():
    pipe = tiny.dit_pipeline()
    pipe.set_progress_bar_config(disable=True)
    cls, scheduler_attrs, pipe_attrs = type(pipe), sorted(pipe.scheduler.__dict__), sorted(pipe.__dict__)
    seen = {}
    with stepcache.cached(pipe, ProbeConfig()) as handle:
        assert handle.model is pipe.transformer
        assert type(pipe) is not cls and isinstance(pipe, cls) and type(pipe).__name__ == cls.__name__
        # the scheduler is hooked only while a call runs
        assert sorted(pipe.scheduler.__dict__) == scheduler_attrs
        peek = pipe.transformer.register_forward_pre_hook(
            lambda module, args: seen.update(step="step" in pipe.scheduler.__dict__))
        pipe(class_labels=[1], num_inference_steps=2, output_type="np")
        peek.remove()
        assert seen == {"step": True}
        assert sorted(pipe.scheduler.__dict__) == scheduler_attrs
    assert type(pipe) is cls
    assert sorted(pipe.scheduler.__dict__) == scheduler_attrs and sorted(pipe.__dict__) == pipe_attrs


def test_a_second_apply_is_an_error_until_the_first_is_removed():
    model = tiny.dit()
    handle = stepcache.apply(model, ProbeConfig())
    with pytest.raises(RuntimeError, match="already has a probe cache applied"):
        stepcache.apply(model, ProbeConfig())
    handle.remove()
    handle.remove()  # a second remove is harmless
    stepcache.apply(model, ProbeConfig()).remove()


def test_cached_block_removes_on_error():
    model = tiny.dit()
    with pytest.raises(ZeroDivisionError):
        with stepcache.cached(model, ProbeConfig()):
            1 / 0
    assert "forward" not in model.__dict__


def test_unsupported_model_names_its_class_and_the_supported_ones():
    with pytest.raises(stepcache.UnsupportedModelError, match=r"no adapter for Linear.*DiTTransformer2DModel"):
        stepcache.apply(nn.Linear(2, 2), ProbeConfig())


def test_bad_targets_and_configs_are_type_errors():
    with pytest.raises(TypeError, match="pipeline with a .transformer or .unet"):
        stepcache.apply(object(), ProbeConfig())
    with pytest.raises(TypeError, match="stepcache config"):
        stepcache.apply(tiny.dit(), {"interval": 2})


def test_stats_is_a_plain_dict_of_the_last_run():
    pipe = tiny.dit_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with stepcache.cached(pipe, ProbeConfig()) as handle:
        assert handle.stats()["steps"] == 0
        pipe(class_labels=[3], num_inference_steps=3, output_type="np")
        stats = handle.stats()
    assert stats == {
        "method": "probe", "family": "dit", "runs": 1, "num_steps": 3, "steps": 3, "calls": 3,
        "full_steps": 3, "cached_steps": 0, "full_step_indices": [0, 1, 2], "cached_step_indices": [],
        "cache_bytes": 0,
        "peak_cache_bytes": 0,
    }


@pytest.mark.parametrize("copy_what", ["pipeline", "model"])
def test_a_deep_copy_is_an_independent_uncached_model(copy_what):
    import copy

    pipe = tiny.dit_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def images(p):
        return p(class_labels=[1], num_inference_steps=4, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images

    reference = images(pipe)
    handle = stepcache.apply(pipe, stepcache.FORAConfig(interval=2))
    cached = images(pipe)
    if copy_what == "pipeline":
        twin = copy.deepcopy(pipe)
    else:
        twin = tiny.dit_pipeline()
        twin.set_progress_bar_config(disable=True)
        twin.transformer = copy.deepcopy(pipe.transformer)
    weights = {k: v.clone() for k, v in twin.transformer.state_dict().items()}
    with torch.no_grad():
        for p in twin.transformer.parameters():
            p.mul_(1.01)  # the copy's own weights must be the ones that run
    changed = images(twin)
    assert not torch.equal(torch.as_tensor(changed), torch.as_tensor(reference))
    assert handle.stats()["runs"] == 1  # the copy's call was not a run of the original's cache
    assert torch.equal(torch.as_tensor(images(pipe)), torch.as_tensor(cached))  # the original is still cached
    handle.remove()
    twin.transformer.load_state_dict(weights)
    uncached_twin = images(twin)
    assert torch.equal(torch.as_tensor(uncached_twin), torch.as_tensor(reference))  # the copy never was cached


def test_diffusers_own_cache_and_stepcache_are_not_stacked():
    from diffusers import FirstBlockCacheConfig

    pipe = tiny.flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(RuntimeError, match=r"call model.disable_cache\(\) before applying stepcache"):
        stepcache.apply(pipe, stepcache.FORAConfig(interval=2))
    pipe.transformer.disable_cache()
    with stepcache.cached(pipe, stepcache.FORAConfig(interval=2)):
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
        with pytest.raises(RuntimeError, match=r"got diffusers' own cache"):
            pipe(**tiny.flux_call_kwargs(), num_inference_steps=3, output_type="latent")
        pipe.transformer.disable_cache()
