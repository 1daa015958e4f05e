"""Offloading and layerwise casting around a cached model: what works, and what is refused.

diffusers' group offloading and layerwise casting hook the model's modules once and leave
them be: every method runs under them, applied before or after stepcache, and (applied
before) ``remove()`` leaves them in place. accelerate's model and sequential CPU offloading are taken off and put
back by the pipeline after every call, which would drop stepcache's own wrapper: they are
refused, at ``apply`` or at the next call, whichever came second.

On this CPU-only suite the group offloading's onload and offload devices are both the CPU,
so the hooks run (onload, offload, block grouping) without moving anything.
"""

from __future__ import annotations

import pytest
import torch

import stepcache
from family_pipes import denoiser, generate, pipeline
from stepcache.adapters import adapter_for
from stepcache.methods import METHODS
from variants import SETTINGS

STEPS = 4
CPU = torch.device("cpu")
HOOKS = {
    "group offloading, block level": lambda model: model.enable_group_offload(
        onload_device=CPU, offload_device=CPU, offload_type="block_level", num_blocks_per_group=1),
    "group offloading, leaf level": lambda model: model.enable_group_offload(
        onload_device=CPU, offload_device=CPU, offload_type="leaf_level"),
    "layerwise casting": lambda model: model.enable_layerwise_casting(
        storage_dtype=torch.bfloat16, compute_dtype=torch.float32),
}


def _cached(pipe, family, config):
    with stepcache.cached(pipe, config) as handle:
        images = generate(pipe, family, STEPS)
        return images, handle.stats()["cached_step_indices"]


CASES = [(family, hooks) for family in ("dit", "pixart", "flux", "unet") for hooks in HOOKS
         # DiT does not take group offloading (diffusers refuses: _supports_group_offloading is False)
         if not (family == "dit" and hooks.startswith("group"))]


@pytest.mark.parametrize("family, hooks", CASES, ids=[f"{f}-{h.replace(' ', '_')}" for f, h in CASES])
def test_every_method_runs_under_diffusers_offloading_and_casting_hooks_in_either_order(family, hooks):
    methods = [name for name, config in METHODS.items()
               if config.fits(adapter_for(denoiser(pipeline(family))).offers)]
    for name in methods:
        no_cache, caching = SETTINGS[name]
        plain = pipeline(family)
        if hooks == "layerwise casting":  # casting changes the weights: compare with the same hooks, uncached
            HOOKS[hooks](denoiser(plain))
        expected, schedule = _cached(plain, family, caching)
        assert schedule, f"{name} cached no step: the comparison would prove nothing"
        uncached = generate(plain, family, STEPS)

        for order in ("hooks first", "stepcache first"):
            pipe = pipeline(family)
            if order == "hooks first":
                HOOKS[hooks](denoiser(pipe))
                handle = stepcache.apply(pipe, caching)
            else:
                handle = stepcache.apply(pipe, caching)
                HOOKS[hooks](denoiser(pipe))
            for _ in range(2):
                assert torch.equal(generate(pipe, family, STEPS), expected), (name, order)
                assert handle.stats()["cached_step_indices"] == schedule, (name, order)
            handle.remove()  # in either order: diffusers' hooks enabled after apply wrap stepcache's
            assert torch.equal(generate(pipe, family, STEPS), uncached), (name, order)  # the hooks still work alone
            with stepcache.cached(pipe, no_cache):
                assert torch.equal(generate(pipe, family, STEPS), uncached), (name, order)


def test_model_cpu_offloading_is_refused_at_apply_or_at_the_next_call():
    pipe = pipeline("dit")
    pipe.enable_model_cpu_offload(device="cpu")
    with pytest.raises(RuntimeError, match=r"enable_model_cpu_offload\(\).*remove_all_hooks"):
        stepcache.apply(pipe, stepcache.FORAConfig(2))
    pipe.remove_all_hooks()
    with stepcache.cached(pipe, stepcache.FORAConfig(2)):
        pipe.enable_model_cpu_offload(device="cpu")
        with pytest.raises(RuntimeError, match=r"got model CPU offloading .* after stepcache was applied"):
            generate(pipe, "dit", STEPS)
        pipe.remove_all_hooks()


def test_sequential_cpu_offloading_is_refused_at_apply():
    pipe = pipeline("flux")
    pipe.enable_sequential_cpu_offload(device="cpu")
    with pytest.raises(RuntimeError, match=r"enable_sequential_cpu_offload\(\)"):
        stepcache.apply(pipe, stepcache.TeaCacheConfig(0.1, coefficients=(1.0, 0.0)))
