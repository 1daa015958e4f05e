"""``stepcache generate``: images with a cache, and how fast and faithful they are against no cache.

Writes an image grid (top row uncached, bottom row cached, same seeds) and, next to it,
a JSON summary (``<out>.json``) with the speedups (wall time and MACs) and fidelity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..methods.base import CacheConfig
from .records import check_writable, public, run_info, write_json_atomic
from .runner import run
from .samplers import Sampler

GRID_SCALE = 4  # zoo images are 16x16: upscale so the grid can be looked at


def generate(sampler: Sampler, config: CacheConfig, out: str | Path, repeats: int = 3, seed: int = 0) -> dict:
    """Sample uncached and with ``config``; write the grid to ``out`` and the summary next to it."""
    out = check_writable(out)
    summary_path = check_writable(out.with_suffix(".json"))
    records = run(sampler, [config], repeats=repeats, seed=seed, fewer_steps_baseline=False, progress=False)
    uncached, cached = records
    save_grid([uncached["_images"], cached["_images"]], out)
    summary = {
        "model": sampler.name,
        "config": cached["config"],
        "steps": sampler.num_steps,
        "seed": seed,
        "images": str(out),
        "speedup_wall": cached["speedup_wall"],
        "speedup_macs": cached["speedup_macs"],
        "fidelity": cached["fidelity"],
        "uncached": public(uncached),
        "cached": public(cached),
        "run": run_info(sampler.device),
    }
    write_json_atomic(summary_path, summary)
    summary["summary_path"] = str(summary_path)
    return summary


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """Rows of (B, C, H, W) images in [0, 1] as one PNG, upscaled ``GRID_SCALE`` times."""
    grid = torch.stack(rows)  # (rows, B, C, H, W)
    n_rows, n_cols, channels, height, width = grid.shape
    array = grid.permute(0, 3, 1, 4, 2).reshape(n_rows * height, n_cols * width, channels).clamp(0, 1)
    pixels = (array.squeeze(-1).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels)
    image.resize((image.width * GRID_SCALE, image.height * GRID_SCALE), Image.NEAREST).save(path)


def summary_line(summary: dict) -> str:
    """One human line: speedups and fidelity."""
    fid = summary["fidelity"]
    psnr = "inf" if fid["psnr"] in (None, float("inf")) else f"{fid['psnr']:.2f}"
    line = (f"{summary['model']} {summary['cached']['label']}: {summary['speedup_wall']:.2f}x wall, "
            f"{summary['speedup_macs']:.2f}x MACs; PSNR {psnr} dB, SSIM {fid['ssim']:.4f}")
    if fid.get("feature_distance") is not None:
        line += f", feature distance {fid['feature_distance']:.4f}"
    return line + f" -> {summary['images']}, {summary['summary_path']}"
