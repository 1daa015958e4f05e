"""What the harness runs: a ``Sampler`` turns (steps, seed) into final images of one model.

Three kinds, one interface:
* ``zoo_sampler``: a shipped zoo model, class-balanced inputs, with its classifier for
  the perceptual distance and the distribution scores;
* ``pipeline_sampler``: any diffusers pipeline plus the keyword arguments to call it with;
* ``stepcache.bench.arch.arch_sampler``: real-size denoisers with random weights (speed only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import UsageError

ZOO_BATCH = 8  # fidelity batch of a zoo model: images compared pixel by pixel with the uncached run


@dataclass
class Sampler:
    """One model under test.

    ``target`` is what ``stepcache.apply`` gets (a pipeline, or a bare denoiser together
    with ``scheduler``); ``sample(steps, seed)`` returns (B, C, H, W) images in [0, 1].
    """

    name: str
    target: Any
    sample: Callable[[int, int], torch.Tensor]
    num_steps: int
    scheduler: Any = None
    measures_quality: bool = True
    perceptual_trunk: nn.Module | None = None  # see fidelity.feature_distance
    distribution: Any = None  # a quality.ZooDistribution for zoo models
    # method -> field values calibrated for this model (e.g. a zoo model's TeaCache coefficients),
    # used wherever the user or the grid does not set that field
    config_defaults: dict = field(default_factory=dict)
    # what one sample call does (sizes, batch, guidance), written into the results and BENCHMARKS.md
    setup: str = ""
    # how the denoiser sees CFG: "batched" ([uncond, cond] in one call), "split", "none"; None if unknown.
    # Peers that work on one of these (FasterCache, cache-dit's separate-CFG setting) read it.
    cfg: str | None = None

    @property
    def device(self) -> torch.device:
        from ..api import find_denoiser

        return next(find_denoiser(self.target)[0].parameters()).device


def zoo_sampler(
    name: str,
    num_steps: int = 25,
    batch: int = ZOO_BATCH,
    guidance_scale: float | None = None,
    cfg_mode: str = "batched",
    device: str = "cpu",
    distribution_samples: int = 0,
) -> Sampler:
    """A zoo model sampled for ``batch`` class-balanced inputs; distribution scores if samples > 0."""
    from .. import zoo
    from ..zoo.pipelines import DEFAULT_GUIDANCE
    from .quality import ZooDistribution

    spec = zoo.registry.get(name)
    pipe = zoo.load(name, device=device)
    # the classifier is shipped separately; without it the feature distance is reported as null
    has_classifier = zoo.registry.classifier_path(spec.dataset).is_dir()
    if distribution_samples and not has_classifier:
        raise UsageError(f"distribution scores need the {spec.dataset} classifier, which is not shipped yet")
    classifier = zoo.load_classifier(spec.dataset, device=device) if has_classifier else None

    def inputs(count: int) -> list:
        classes = zoo.data.num_classes(spec.dataset)
        labels = [i % classes for i in range(count)]
        return [zoo.data.caption(i, spec.dataset) for i in labels] if spec.captioned else labels

    def call(inputs_, steps: int, seed: int) -> torch.Tensor:
        generator = torch.Generator(device).manual_seed(seed)
        # None: the zoo pipeline's own default, the guidance its quality bar was measured at
        guidance = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
        out = pipe(inputs_, num_inference_steps=steps, generator=generator, cfg_mode=cfg_mode, output_type="pt",
                   **guidance)
        return as_image_batch(output_images(out))

    fidelity_inputs = inputs(batch)
    distribution = None
    if distribution_samples:
        distribution = ZooDistribution(spec.dataset, classifier, inputs, call, distribution_samples)
    return Sampler(
        name=f"zoo:{name}",
        target=pipe,
        sample=lambda steps, seed: call(fidelity_inputs, steps, seed),
        num_steps=num_steps,
        perceptual_trunk=classifier.body if classifier is not None else None,
        distribution=distribution,
        config_defaults=zoo_config_defaults(name),
        cfg="none" if guidance_scale == 1 else cfg_mode,
        setup=f"{batch} {'videos' if spec.dataset == 'moving-shapes' else 'images'} of {spec.dataset}, guidance "
              f"{DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale} with {cfg_mode} CFG",
    )


def zoo_config_defaults(name: str) -> dict:
    """Field values a zoo model ships for methods: its calibrated TeaCache coefficients, if any."""
    from ..zoo.teacache import COEFFICIENTS_FILE
    from ..zoo import registry

    path = registry.get(name).path / COEFFICIENTS_FILE
    return {"teacache": {"coefficients": str(path)}} if path.is_file() else {}


def pipeline_sampler(pipe: Any, call_kwargs: dict | None = None, num_steps: int = 25, name: str | None = None,
                     measures_quality: bool = True) -> Sampler:
    """Any diffusers pipeline, called as ``pipe(**call_kwargs, num_inference_steps=, generator=)``."""
    call_kwargs = dict(call_kwargs or {})
    for reserved in ("num_inference_steps", "generator"):
        if reserved in call_kwargs:
            raise ValueError(f"call_kwargs must not set {reserved!r}: the harness sets it for every run")
    call_kwargs.setdefault("output_type", "pt")

    def sample(steps: int, seed: int) -> torch.Tensor:
        generator = torch.Generator(pipe.device).manual_seed(seed)
        out = pipe(**call_kwargs, num_inference_steps=steps, generator=generator)
        return as_image_batch(output_images(out))

    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return Sampler(name=name or type(pipe).__name__, target=pipe, sample=sample, num_steps=num_steps,
                   measures_quality=measures_quality)


def output_images(out: Any) -> Any:
    """A pipeline output's images: ``.frames`` (videos), ``.images``, or the first item of a plain tuple."""
    return out.frames if hasattr(out, "frames") else out.images if hasattr(out, "images") else out[0]


def as_image_batch(images: Any) -> torch.Tensor:
    """A pipeline's images (tensor (B,C,H,W), numpy (B,H,W,C) in [0, 1], or PIL list) -> CPU (B,C,H,W) float.

    Videos (tensor (B,F,C,H,W), numpy (B,F,H,W,C)) come back with their frames stacked as channels,
    (B, F*C, H, W): a clip is scored as one image, as the zoo's clip classifier reads it.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu()
        return images.flatten(1, 2) if images.ndim == 5 else images
    if isinstance(images, np.ndarray):
        if images.ndim == 5:
            return torch.from_numpy(images).float().permute(0, 1, 4, 2, 3).flatten(1, 2)
        return torch.from_numpy(images).float().permute(0, 3, 1, 2)
    if isinstance(images, list) and images and hasattr(images[0], "mode"):
        arrays = np.stack([np.asarray(im, dtype=np.float32) / 255 for im in images])
        return as_image_batch(arrays if arrays.ndim == 4 else arrays[..., None])
    raise TypeError(f"cannot read pipeline images of type {type(images).__name__}")
