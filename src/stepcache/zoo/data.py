"""Offline datasets for the model zoo: "digits" (real) and "shapes" (procedural).

Every dataset is returned as ``(images, labels)`` with images a float tensor in
[0, 1] of shape (N, C, H, W) and labels an int64 tensor of class indices.

* digits: scikit-learn's bundled ``load_digits`` (8x8 grayscale, BSD licence),
  shipped as ``data/digits.npz`` so that no scikit-learn is needed at run time,
  upsampled bilinearly to 16x16. Fixed seeded 80/20 train/test split.
* shapes: 16x16 RGB images of a coloured shape on a dark background, drawn
  deterministically from a seed; class = colour * 3 + shape, caption
  "a <colour> <shape>".
* moving-shapes: 4-frame 16x16 RGB videos of one such shape moving in a straight
  line at a constant speed, returned as (N, F, C, H, W) (diffusers' layout of video
  frames); class = 4 * shapes class + direction, caption "a <colour> <shape> moving
  <direction>".
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = Path(__file__).parent / "data"
DIGITS_FILE = DATA_DIR / "digits.npz"
DATASETS = ("digits", "shapes", "moving-shapes")

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
# moving-shapes: (dx, dy) per direction in image coordinates (y grows downwards)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
VIDEO_FRAMES = 4
VIDEO_TRAIN_SIZE = 12000
VIDEO_TEST_SIZE = 480
# smaller shapes and a bounded speed than the still images: 2 * 3.5 + 1 + 3 * 2.5 < 16 px, so every path fits;
# at least one 2-px patch per frame: at 1-1.75 px the trained model never learnt the direction (docs/zoo.md)
_VIDEO_HALF = (3.0, 3.5)
_VIDEO_SPEED = (2.0, 2.5)  # px per frame


def load_dataset(name: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images in [0, 1], labels)`` of dataset ``name`` ("digits"/"shapes"), split "train"/"test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        return _digits(split)
    if name == "shapes":
        return _shapes(split)
    if name == "moving-shapes":
        n, seed = (VIDEO_TRAIN_SIZE, 0) if split == "train" else (VIDEO_TEST_SIZE, 1)
        return render_moving_shapes(n, seed)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def num_classes(name: str) -> int:
    """Number of classes of dataset ``name``."""
    return {"digits": 10, "shapes": len(COLOURS) * len(SHAPES),
            "moving-shapes": len(COLOURS) * len(SHAPES) * len(DIRECTIONS)}[name]


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


def caption(label: int, dataset: str = "shapes") -> str:
    """Caption of a shapes class, e.g. 0 -> "a red circle", or of a moving-shapes class ("a red circle moving left")."""
    if dataset == "moving-shapes":
        return f"{caption(label // len(DIRECTIONS))} moving {list(DIRECTIONS)[label % len(DIRECTIONS)]}"
    if dataset != "shapes":
        raise ValueError(f"{dataset!r} has no captions; captioned datasets: shapes, moving-shapes")
    colour = list(COLOURS)[label // len(SHAPES)]
    return f"a {colour} {SHAPES[label % len(SHAPES)]}"


def caption_to_label(text: str, dataset: str = "shapes") -> int:
    """Inverse of :func:`caption`; raises ValueError for captions outside the dataset."""
    captions = [caption(i, dataset) for i in range(num_classes(dataset))]
    if text not in captions:
        raise ValueError(f"{text!r} is not a {dataset} caption; expected e.g. {captions[0]!r}")
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
    return _draw(labels, half, cx, cy, _jittered_colours(labels, rng))


def _jittered_colours(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colour = np.array(list(COLOURS.values()))[labels // len(SHAPES)]
    return np.clip(colour + rng.uniform(-0.05, 0.05, size=colour.shape), 0, 1)


def _draw(labels: np.ndarray, half: np.ndarray, cx: np.ndarray, cy: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Shapes classes ``labels`` of half-extent ``half`` centred at (cx, cy), each (n, 1, 1), in ``colour`` (n, 3)."""
    n, size = len(labels), SHAPES_SIZE
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
    images = _BACKGROUND + mask[:, None] * (colour[:, :, None, None] - _BACKGROUND)
    return images.astype(np.float32)


def render_moving_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` class-balanced moving-shapes videos (n, VIDEO_FRAMES, 3, 16, 16) deterministically from ``seed``.

    Each video is one shape (random size, colour jitter, start and speed) moving in a
    straight line at a constant speed; the whole path stays inside the frame.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes("moving-shapes"))
    shape_labels, directions = labels // len(DIRECTIONS), labels % len(DIRECTIONS)
    half = rng.uniform(*_VIDEO_HALF, size=(n, 1, 1))
    speed = rng.uniform(*_VIDEO_SPEED, size=(n, 1, 1))
    step = np.array(list(DIRECTIONS.values()), dtype=np.float64)[directions][:, :, None, None] * speed[:, None]
    travel = np.abs(step) * (VIDEO_FRAMES - 1)  # (n, 2, 1, 1): x and y extent of the path
    low = half[:, None] + 0.5 + np.where(step < 0, travel, 0)
    high = SHAPES_SIZE - half[:, None] - 0.5 - np.where(step > 0, travel, 0)
    start = rng.uniform(low, high)  # (n, 2, 1, 1) centre in the first frame
    colour = _jittered_colours(shape_labels, rng)
    frames = [_draw(shape_labels, half, *(start + f * step).transpose(1, 0, 2, 3), colour) for f in range(VIDEO_FRAMES)]
    return torch.from_numpy(np.stack(frames, axis=1)), torch.from_numpy(labels.astype(np.int64))


def _triangle(dx: np.ndarray, dy: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Upward isosceles triangle with apex at -half and base at +0.8 half (image y grows downwards)."""
    top, base = -half, 0.8 * half
    # Inside if below the apex, above the base and within the two slanted edges.
    width_at_y = half * (dy - top) / (base - top)
    return (dy >= top) & (dy <= base) & (np.abs(dx) <= width_at_y)
