"""Turning a model name from the command line into a loaded pipeline, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError

ZOO_PREFIX = "zoo:"


def load_pipeline(spec: str, device: str = "cpu") -> Any:
    """``zoo:NAME`` -> a shipped zoo pipeline; a directory -> ``DiffusionPipeline.from_pretrained`` offline."""
    from .. import zoo

    if spec.startswith(ZOO_PREFIX):
        return zoo.load(_zoo_name(spec), device=device)
    path = Path(spec)
    if path.is_dir():
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.from_pretrained(path, local_files_only=True).to(device)
    known = ", ".join(ZOO_PREFIX + name for name, _ in zoo.list_models())
    raise UsageError(f"unknown model {spec!r}: give zoo:NAME ({known}), arch:NAME or a local from_pretrained folder "
                     "(`stepcache models` lists them)")


def _zoo_name(spec: str) -> str:
    """The zoo model's name; UsageError for one the zoo does not have."""
    from .. import zoo

    name = spec[len(ZOO_PREFIX):]
    try:
        zoo.registry.get(name)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return name


def load_sampler(spec: str, num_steps: int | None = None, batch: int | None = None, distribution_samples: int = 0,
                 call_kwargs: dict | None = None, device: str = "cpu"):
    """A bench Sampler for ``zoo:NAME``, ``arch:NAME`` (speed only) or a local pipeline directory.

    A local pipeline is called with ``call_kwargs`` (e.g. ``{"prompt": "a cat"}``).
    """
    from .arch import ARCH_PREFIX, DEFAULT_STEPS, arch_sampler
    from .samplers import ZOO_BATCH, pipeline_sampler, zoo_sampler

    if spec.startswith(ZOO_PREFIX):
        return zoo_sampler(_zoo_name(spec), num_steps=num_steps or 25, batch=batch or ZOO_BATCH,
                           distribution_samples=distribution_samples, device=device)
    if spec.startswith(ARCH_PREFIX):
        return arch_sampler(spec[len(ARCH_PREFIX):], num_steps=num_steps or DEFAULT_STEPS, batch=batch or 1,
                            device=device)
    pipe = load_pipeline(spec, device=device)
    return pipeline_sampler(pipe, call_kwargs, num_steps=num_steps or 25, name=spec)
