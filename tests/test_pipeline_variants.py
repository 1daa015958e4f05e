"""Every method that fits a denoiser, through every pipeline variant users run (tests/variants.py).

For each (variant, method): the method's no-cache setting is bit-identical to the untouched
pipeline; its caching setting caches, with stats equal to the steps the pipeline really ran
and no cache left after the call; an exception raised inside the denoiser mid-run leaves the
next call as it would have been; remove() is exact.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch

import stepcache
from stepcache.api import find_denoiser
from stepcache.methods import METHODS
from variants import SETTINGS, VARIANTS

CASES = [pytest.param(variant, name, id=f"{variant.name}-{name}")
         for variant in VARIANTS for name, config in METHODS.items() if config.fits(variant.offers())]


def test_every_registered_method_has_settings_here():
    assert set(SETTINGS) == set(METHODS)


class Boom(Exception):
    pass


def _run(variant, pipe):
    kwargs = variant.kwargs()
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    with torch.no_grad():
        return variant.output(pipe(**kwargs))


@contextlib.contextmanager
def _counting_steps(scheduler):
    """Counts the scheduler.step calls of an uncached pipeline's loop: the steps it really ran."""
    count = [0]
    cls = type(scheduler)
    original = cls.step

    @functools.wraps(original)  # pipelines read step's signature to pass generator= and eta=
    def step(self, *args, **kwargs):
        count[0] += self is scheduler
        return original(self, *args, **kwargs)

    cls.step = step
    try:
        yield count
    finally:
        cls.step = original


# the layer each family's denoiser runs first
FIRST_LAYERS = ("conv_in", "pos_embed", "x_embedder", "patch_embedding", "patch_embed", "img_in", "proj_in")


def _fail_at_third_call(model):
    """A forward pre-hook on the denoiser's first layer that raises at its third call."""
    first = next(getattr(model, name) for name in FIRST_LAYERS if hasattr(model, name))
    calls = [0]

    def hook(module, args):
        calls[0] += 1
        if calls[0] == 3:
            raise Boom()

    return first.register_forward_pre_hook(hook)


@pytest.mark.parametrize("variant,method", CASES)
def test_variant(variant, method):
    pipe = variant.build()
    with _counting_steps(pipe.scheduler) as steps:
        reference = _run(variant, pipe)
    ran = steps[0]
    no_cache, caching = SETTINGS[method]

    with stepcache.cached(pipe, no_cache) as handle:
        assert torch.equal(_run(variant, pipe), reference)
        assert handle.stats()["steps"] == ran and handle.stats()["cached_steps"] == 0

    handle = stepcache.apply(pipe, caching)
    cached = _run(variant, pipe)
    stats = handle.stats()
    assert stats["runs"] == 1 and stats["steps"] == ran, stats
    if variant.name != "sd-interrupt":
        assert stats["num_steps"] == ran, stats
    assert stats["cached_steps"] > 0, stats
    assert stats["cache_bytes"] == 0, "caches must be freed when the call returns"

    failing = _fail_at_third_call(find_denoiser(pipe)[0])
    with pytest.raises(Boom):
        _run(variant, pipe)
    failing.remove()
    assert stats["cache_bytes"] == 0 and handle.stats()["cache_bytes"] == 0
    assert torch.equal(_run(variant, pipe), cached), "an exception mid-run changed the next call"

    handle.remove()
    assert torch.equal(_run(variant, pipe), reference)
