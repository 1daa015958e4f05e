"""Offline datasets for the model zoo: "digits" (real) and "shapes" (procedural).

Every dataset is returned as ``(images, labels)`` with images a float tensor in
[0, 1] of shape (N, C, H, W) and labels an int64 tensor of class indices.

* digits: scikit-learn's bundled ``load_digits`` (8x8 grayscale, BSD licence),
  shipped as ``data/digits.npz`` so that no scikit-learn is needed at run time,
  upsampled bilinearly to 16x16. Fixed seeded 80/20 train/test split.
* shapes: 16x16 RGB images of a coloured shape on a dark background, drawn
  deterministically from a seed; class = colour * 3 + shape, caption
  "a <colour> <shape>".
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = Path(__file__).parent / "data"
DIGITS_FILE = DATA_DIR / "digits.npz"
DATASETS = ("digits", "shapes")

COLOURS = {
    "red": (0.9, 0.15, 0.15),
    "green": (0.15, 0.8, 0.2),
    "blue": (0.2, 0.3, 0.95),
    "yellow": (0.95, 0.9, 0.15),
}
SHAPES = ("circle", "square", "triangle")
SHAPES_SIZE = 16
SHAPES_TRAIN_SIZE = 24000
SHAPES_TEST_SIZE = 600
_SUPERSAMPLE = 4  # shapes are drawn 4x larger then box-filtered, for anti-aliasing
_BACKGROUND = 0.08


def load_dataset(name: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images in [0, 1], labels)`` of dataset ``name`` ("digits"/"shapes"), split "train"/"test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        return _digits(split)
    if name == "shapes":
        return _shapes(split)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def num_classes(name: str) -> int:
    """Number of classes of dataset ``name``."""
    return {"digits": 10, "shapes": len(COLOURS) * len(SHAPES)}[name]


def export_digits() -> None:
    """(Re)create ``data/digits.npz`` from scikit-learn's bundled copy (needs scikit-learn)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    DATA_DIR.mkdir(exist_ok=True)
    np.savez_compressed(DIGITS_FILE, images=bunch.images.astype(np.uint8), labels=bunch.target.astype(np.int64))


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw = np.load(DIGITS_FILE)
    images = torch.from_numpy(raw["images"]).float().unsqueeze(1) / 16.0  # pixel values are 0..16
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(raw["labels"])
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    n_test = len(labels) // 5
    idx = order[:n_test] if split == "test" else order[n_test:]
    return images[idx], labels[idx]


def caption(label: int) -> str:
    """Caption of a shapes class, e.g. 0 -> "a red circle"."""
    colour = list(COLOURS)[label // len(SHAPES)]
    return f"a {colour} {SHAPES[label % len(SHAPES)]}"


def caption_to_label(text: str) -> int:
    """Inverse of :func:`caption`; raises ValueError for captions outside the dataset."""
    captions = [caption(i) for i in range(num_classes("shapes"))]
    if text not in captions:
        raise ValueError(f"{text!r} is not a shapes caption; expected e.g. {captions[0]!r}")
    return captions.index(text)


def _shapes(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Distinct seeds keep the test images disjoint draws from the training ones.
    n, seed = (SHAPES_TRAIN_SIZE, 0) if split == "train" else (SHAPES_TEST_SIZE, 1)
    return render_shapes(n, seed)


def render_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` class-balanced shapes images deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes("shapes"))
    images = np.concatenate([_render_chunk(labels[i : i + 2000], rng) for i in range(0, n, 2000)])
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _render_chunk(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, size = len(labels), SHAPES_SIZE
    half = rng.uniform(3.5, 6.0, size=(n, 1, 1))  # half-extent in output pixels
    cx = rng.uniform(half[:, 0, 0] + 0.5, size - half[:, 0, 0] - 0.5)[:, None, None]
    cy = rng.uniform(half[:, 0, 0] + 0.5, size - half[:, 0, 0] - 0.5)[:, None, None]
    coords = (np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    x, y = coords[None, None, :], coords[None, :, None]
    masks = {
        "circle": (x - cx) ** 2 + (y - cy) ** 2 <= half**2,
        "square": (np.abs(x - cx) <= 0.85 * half) & (np.abs(y - cy) <= 0.85 * half),
        "triangle": _triangle(x - cx, y - cy, half),
    }
    shape_idx = labels % len(SHAPES)
    mask = np.stack([masks[s] for s in SHAPES])[shape_idx, np.arange(n)].astype(np.float32)
    mask = mask.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))
    colour = np.array(list(COLOURS.values()))[labels // len(SHAPES)]
    colour = np.clip(colour + rng.uniform(-0.05, 0.05, size=colour.shape), 0, 1)
    images = _BACKGROUND + mask[:, None] * (colour[:, :, None, None] - _BACKGROUND)
    return images.astype(np.float32)


def _triangle(dx: np.ndarray, dy: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Upward isosceles triangle with apex at -half and base at +0.8 half (image y grows downwards)."""
    top, base = -half, 0.8 * half
    # Inside if below the apex, above the base and within the two slanted edges.
    width_at_y = half * (dy - top) / (base - top)
    return (dy >= top) & (dy <= base) & (np.abs(dx) <= width_at_y)
