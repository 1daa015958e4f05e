"""Score the zoo models and draw sample grids: ``python -m stepcache.zoo.evaluate [NAME ...]``.

For each model, class-balanced samples from the uncached pipeline at its default
steps and guidance are scored with the dataset's classifier (accuracy against the
intended class) and by Fréchet distance to the held-out test split. Baselines of
the same size: clipped Gaussian noise and a random-init model of the same config.
Writes ``metrics.json`` and ``<name>.png`` grids to the output folder (docs/zoo).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import data, load, load_classifier, metrics, nets, real_images, registry
from .pipelines import to_output

GRID_COLUMNS = 8
GRID_SCALE = 4


def sample(pipe, spec: registry.ZooModel, labels: torch.Tensor, seed: int = 0, chunk: int = 256) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] for class ``labels`` with the pipeline's default settings."""
    gen = torch.Generator().manual_seed(seed)
    inputs = labels.tolist() if not spec.captioned else [data.caption(int(i), spec.dataset) for i in labels]
    parts = [pipe(inputs[i : i + chunk], generator=gen, output_type="pt") for i in range(0, len(inputs), chunk)]
    return torch.cat([p.frames if hasattr(p, "frames") else p.images for p in parts]).cpu()


def untrained_pipeline(spec: registry.ZooModel):
    """A random-init pipeline of the same config, the "no training" baseline."""
    torch.manual_seed(0)
    modules = {spec.denoiser_attr: spec.build(), "scheduler": nets.sampling_scheduler(spec.prediction_type)}
    if spec.captioned:
        modules["text_encoder"] = spec.build_text_encoder()
    return spec.pipeline_cls(**modules)


def score(classifier, images: torch.Tensor, labels: torch.Tensor, real_feats: torch.Tensor) -> dict:
    scores = {
        "accuracy": round(metrics.class_accuracy(classifier, images, labels), 4),
        "frechet": round(metrics.frechet_distance(metrics.features(classifier, images), real_feats), 3),
    }
    if images.ndim == 5:  # videos: also every frame on its own, by the still-image shapes classifier
        frames = images.shape[1]
        shape_labels = torch.as_tensor(labels) // len(data.DIRECTIONS)
        scores["frame_accuracy"] = round(metrics.class_accuracy(
            load_classifier("shapes"), images.flatten(0, 1), shape_labels.repeat_interleave(frames)), 4)
    return scores


def evaluate(spec: registry.ZooModel, per_class: int, out_dir: Path) -> dict:
    """Scores of ``spec`` and its baselines; also saves its sample grid."""
    classifier = load_classifier(spec.dataset)
    real = real_images(spec.dataset, "test")
    real_feats = metrics.features(classifier, real)
    labels = torch.arange(data.num_classes(spec.dataset)).repeat_interleave(per_class)
    trained = sample(load(spec.name), spec, labels)
    save_grid(trained, per_class, out_dir / f"{spec.name}.png")
    noise = to_output(torch.randn(trained.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), "pt")
    return {
        "samples": len(labels),
        "real_test_images": len(real),
        "trained": score(classifier, trained, labels, real_feats),
        "untrained": score(classifier, sample(untrained_pipeline(spec), spec, labels), labels, real_feats),
        "noise": score(classifier, noise, labels, real_feats),
        "real_train": score(classifier, *data.load_dataset(spec.dataset, "train"), real_feats),
    }


def save_grid(images: torch.Tensor, per_class: int, path: Path) -> None:
    """One row per class, the first GRID_COLUMNS samples of each (videos: their frames side by side), upscaled."""
    rows = images.reshape(-1, per_class, *images.shape[1:])
    if rows.ndim == 6:  # videos (classes, per_class, F, C, H, W): as many whole videos as fit in GRID_COLUMNS
        rows = rows[:, : max(1, GRID_COLUMNS // rows.shape[2])].flatten(1, 2)
    rows = rows[:, :GRID_COLUMNS]
    n_rows, n_cols, c, h, w = rows.shape
    grid = rows.permute(0, 3, 1, 4, 2).reshape(n_rows * h, n_cols * w, c)
    array = (grid.squeeze(-1).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    image.resize((image.width * GRID_SCALE, image.height * GRID_SCALE), Image.NEAREST).save(path)


def markdown_table(results: dict) -> str:
    lines = [
        "| model | samples | classifier acc. (trained / untrained / noise) "
        "| Fréchet (trained / untrained / noise / real train) |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        acc = " / ".join(f"{r[k]['accuracy']:.1%}" for k in ("trained", "untrained", "noise"))
        fd = " / ".join(f"{r[k]['frechet']:.2f}" for k in ("trained", "untrained", "noise", "real_train"))
        lines.append(f"| {name} | {r['samples']} | {acc} | {fd} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(registry.MODELS))
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("docs/zoo"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics_file = args.out / "metrics.json"
    results = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    for name in args.names:
        results[name] = evaluate(registry.get(name), args.per_class, args.out)
        print(name, json.dumps(results[name]), flush=True)
    metrics_file.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
