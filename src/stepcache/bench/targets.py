"""Turning a model name from the command line into a loaded pipeline, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ZOO_PREFIX = "zoo:"


def load_pipeline(spec: str, device: str = "cpu") -> Any:
    """``zoo:NAME`` -> a shipped zoo pipeline; a directory -> ``DiffusionPipeline.from_pretrained`` offline."""
    from .. import zoo

    if spec.startswith(ZOO_PREFIX):
        return zoo.load(spec[len(ZOO_PREFIX):], device=device)
    path = Path(spec)
    if path.is_dir():
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.from_pretrained(path, local_files_only=True).to(device)
    known = ", ".join(ZOO_PREFIX + name for name, _ in zoo.list_models())
    raise ValueError(f"unknown model {spec!r}: give zoo:NAME ({known}) or a local from_pretrained directory")
