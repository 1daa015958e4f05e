"""Tiny pipelines of the five families stepcache's methods cover, for the tests that wrap or transform a
cached model (torch.compile, peft LoRA, offloading): one seeded call of each, returning its images."""

from __future__ import annotations

import torch

import tiny

# family -> (tiny pipeline builder, call kwargs builder)
PIPELINES = {
    "dit": (tiny.dit_pipeline, lambda: dict(class_labels=[3])),
    "pixart": (tiny.pixart_pipeline, tiny.pixart_call_kwargs),
    "sd3": (tiny.sd3_pipeline, tiny.sd3_call_kwargs),
    "flux": (tiny.flux_pipeline, tiny.flux_call_kwargs),
    "unet": (tiny.sd_pipeline, tiny.sd_call_kwargs),
}


def pipeline(family: str):
    pipe = PIPELINES[family][0]()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoiser(pipe) -> torch.nn.Module:
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


def generate(pipe, family: str, steps: int) -> torch.Tensor:
    return pipe(**PIPELINES[family][1](), num_inference_steps=steps, output_type="pt",
                generator=torch.Generator().manual_seed(0)).images
