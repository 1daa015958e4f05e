"""``stepcache generate``: images with a cache, and how fast and faithful they are against no cache.

Writes an image grid (top row uncached, bottom row cached, same seeds, each row labelled)
and, next to it, a JSON summary (``<out>.json``) with the speedups (wall time and MACs) and
fidelity. Runs: one uncached and one cached warm-up (their images are the grid; they count
the MACs), ``pairs`` timed uncached runs and ``pairs`` timed (uncached, cached) pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..methods.base import CacheConfig
from ..errors import check_writable
from .records import public, run_info, write_json_atomic
from .runner import run
from .samplers import Sampler

GRID_SCALE = 4  # zoo images are 16x16: upscale so the grid can be looked at


def generate(sampler: Sampler, config: CacheConfig, out: str | Path, pairs: int = 1, seed: int = 0,
             progress: bool = True) -> dict:
    """Sample uncached and with ``config``; write the grid to ``out`` and the summary next to it.

    ``pairs`` timed (uncached, cached) run pairs give the wall speedup; ``progress`` shows the runs on stderr.
    """
    out = check_writable(out)
    summary_path = check_writable(out.with_suffix(".json"))
    records = run(sampler, [config], repeats=pairs, seed=seed, fewer_steps_baseline=False, progress=progress)
    if records[0]["kind"] == "not_run":
        raise ValueError(f"{records[0]['label']} cannot run on {sampler.name}: {records[0]['reason']}")
    uncached, cached = records
    save_grid([uncached["_images"], cached["_images"]], out, labels=["uncached", f"cached: {cached['label']}"])
    summary = {
        "model": sampler.name,
        "config": cached["config"],
        "steps": sampler.num_steps,
        "seed": seed,
        "timed_pairs": pairs,
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


LABEL_HEIGHT = 14  # pixels of the text band above each row
ROW_GAP = 8  # pixels between rows


def save_grid(rows: list[torch.Tensor], path: Path, labels: list[str] | None = None) -> None:
    """Rows of (B, C, H, W) images in [0, 1] as one PNG, upscaled ``GRID_SCALE`` times, each row under its label."""
    from PIL import ImageDraw

    tiles = []
    for row in rows:
        n, channels, height, width = row.shape
        array = row.clamp(0, 1).permute(2, 0, 3, 1).reshape(height, n * width, channels)
        pixels = (array.numpy() * 255).round().astype(np.uint8)
        tile = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).convert("RGB")
        tiles.append(tile.resize((tile.width * GRID_SCALE, tile.height * GRID_SCALE), Image.NEAREST))
    band = LABEL_HEIGHT if labels else 0
    width = max(t.width for t in tiles)
    canvas = Image.new("RGB", (width, sum(t.height + band for t in tiles) + ROW_GAP * (len(tiles) - 1)), "white")
    draw, top = ImageDraw.Draw(canvas), 0
    for index, tile in enumerate(tiles):
        if labels:
            draw.text((2, top + 2), labels[index], fill="black")
        canvas.paste(tile, (0, top + band))
        top += band + tile.height + ROW_GAP
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def summary_line(summary: dict) -> str:
    """One human line: speedups and fidelity."""
    fid = summary["fidelity"]
    psnr = "inf" if fid["psnr"] in (None, float("inf")) else f"{fid['psnr']:.2f}"
    line = (f"{summary['model']} {summary['cached']['label']}: {summary['speedup_wall']:.2f}x wall, "
            f"{summary['speedup_macs']:.2f}x MACs; PSNR {psnr} dB, SSIM {fid['ssim']:.4f}")
    if fid.get("feature_distance") is not None:
        line += f", feature distance {fid['feature_distance']:.4f}"
    return line + f" -> {summary['images']}, {summary['summary_path']}"
