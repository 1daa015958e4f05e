"""The method x family matrix, generated from the registries, in the shape of diffusers' CacheTesterMixin.

``CacheTesterMixin`` holds the shared machinery (a tiny model of the family, one denoiser call's inputs,
a five-step hand-written loop); each registered method gets a ``<Method>TesterMixin`` with its tests;
each registered family gets a ``Test<Family>`` class mixing in the mixins of every method that fits it
(by the capabilities its adapter offers) and ``RefusalTesterMixin`` for the ones that do not. A new
method or family appears here without editing this file; a family without a tiny model in
tests/tiny.py fails ``test_every_family_has_a_tiny_model``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import stepcache
import tiny
from stepcache.adapters import ADAPTERS, CAPABILITIES, adapter_for, missing_capabilities
from stepcache.methods import METHODS
from variants import SETTINGS

STEPS = 5
FRACTIONS = (1.0, 0.8, 0.6, 0.4, 0.2)  # the loop's timesteps, as fractions of the inputs' own


def test_every_family_has_a_tiny_model():
    assert {a.family for a in ADAPTERS} <= set(tiny.MODELS)


class CacheTesterMixin:
    """Shared machinery; a generated ``Test<Family>`` sets ``family``."""

    family: str

    def model(self):
        return tiny.MODELS[self.family]()

    def inputs(self, model) -> dict:
        return tiny.model_inputs(self.family, model)

    def loop(self, model, inputs, handle=None) -> list[torch.Tensor]:
        """Five calls at falling timesteps (the inputs' own timestep scaled), as a sampling loop makes them."""
        adapter = adapter_for(model)
        sample, timestep = adapter.sample_and_timestep((), inputs)
        key = next(k for k, v in inputs.items() if v is timestep)
        if handle is not None:
            handle.start_run(STEPS)
        outputs = []
        with torch.no_grad():
            for fraction in FRACTIONS:
                output = model(**{**inputs, key: (timestep * fraction).to(timestep.dtype)})
                outputs.append(output[0] if isinstance(output, tuple) else output.sample)
        return outputs

    def config(self, config, inputs):
        """A bare model names its CFG layout where the config asks (T-GATE): the inputs' batch stacks two halves."""
        if "cfg" in {f.name for f in dataclasses.fields(config)}:
            sample = adapter_for(self.model()).sample_and_timestep((), inputs)[0]
            return dataclasses.replace(config, cfg="batched" if sample.shape[0] % 2 == 0 else "none")
        return config

    def check_exact_and_removed(self, method: str):
        """The method's no-cache setting gives the uncached outputs bit for bit; remove() leaves nothing behind."""
        no_cache, _ = SETTINGS[method]
        model = self.model()
        inputs = self.inputs(model)
        reference = self.loop(model, inputs)
        state = {name: sorted(module.__dict__) for name, module in model.named_modules()}
        handle = stepcache.apply(model, self.config(no_cache, inputs))
        hooked = self.loop(model, inputs, handle)
        assert handle.stats()["cached_steps"] == 0
        handle.remove()
        assert all(torch.equal(a, b) for a, b in zip(hooked, reference))
        assert all(torch.equal(a, b) for a, b in zip(self.loop(model, inputs), reference))
        assert {name: sorted(module.__dict__) for name, module in model.named_modules()} == state

    def check_caches(self, method: str):
        """The method's caching setting caches steps and changes the outputs; a second apply is refused."""
        _, caching = SETTINGS[method]
        model = self.model()
        inputs = self.inputs(model)
        reference = self.loop(model, inputs)
        with stepcache.cached(model, self.config(caching, inputs)) as handle:
            cached = self.loop(model, inputs, handle)
            stats = handle.stats()
            with pytest.raises(RuntimeError, match="already has"):
                stepcache.apply(model, self.config(caching, inputs))
        assert stats["steps"] == STEPS and stats["cached_steps"] > 0, stats
        assert all(torch.isfinite(c).all() for c in cached) and not all(map(torch.equal, cached, reference))


class RefusalTesterMixin(CacheTesterMixin):
    """The methods that do not fit the family are refused at apply, naming the capabilities missing."""

    def test_unfit_methods_are_refused_naming_what_is_missing(self):
        model = self.model()
        offered = adapter_for(model).offers
        inputs = self.inputs(model)
        for name, cls in sorted(METHODS.items()):
            missing = missing_capabilities(cls.requires, offered)
            if missing:
                with pytest.raises(stepcache.UnsupportedModelError, match=CAPABILITIES[missing[0]]):
                    stepcache.apply(model, self.config(SETTINGS[name][1], inputs))


def _method_mixin(name: str) -> type:
    """``<Method>TesterMixin``: the method's tests, named after it as diffusers' test_<cache>_inference are."""
    def no_cache_is_exact(self):
        self.check_exact_and_removed(name)

    def caches(self):
        self.check_caches(name)

    tests = {f"test_{name}_no_cache_setting_is_exact_and_remove_restores": no_cache_is_exact,
             f"test_{name}_caching_setting_caches": caches}
    return type(f"{METHODS[name].__name__.removesuffix('Config')}TesterMixin", (CacheTesterMixin,), tests)


MIXINS = {name: _method_mixin(name) for name in sorted(METHODS)}


def _family_class(family: str) -> type:
    """``Test<Family>``: the mixins of every method that fits the family, and the refusals of the others."""
    offered = adapter_for(tiny.MODELS[family]()).offers
    fitting = tuple(MIXINS[name] for name in sorted(METHODS) if METHODS[name].fits(offered))
    return type(f"Test{family.title().replace('_', '')}", (*fitting, RefusalTesterMixin), {"family": family})


for _family in tiny.MODELS:
    _cls = _family_class(_family)
    globals()[_cls.__name__] = _cls
