"""Distribution quality of a zoo model's samples: classifier accuracy and offline Fréchet distance.

Both come from the zoo's classifier of the model's dataset (no Inception download). The
Fréchet distance of a few hundred samples is biased and noisy, so every score is taken
over ``len(SEED_SETS)`` independent seed sets of ``samples`` images each, and reported
as the mean with the run-to-run spread (max - min): a difference between two configs
smaller than that spread is noise.
"""

from __future__ import annotations

from typing import Callable

import torch

SEED_SETS = (1000, 2000)
CHUNK = 256  # images per pipeline call, to bound memory


class ZooDistribution:
    """Scores class-balanced samples of one zoo pipeline against its dataset's real test images."""

    def __init__(self, dataset: str, classifier: torch.nn.Module, inputs: Callable[[int], list],
                 call: Callable[[list, int, int], torch.Tensor], samples: int) -> None:
        from .. import zoo
        from ..zoo import metrics

        self.classifier = classifier
        self.inputs = inputs
        self.call = call
        self.samples = samples
        self.classes = zoo.data.num_classes(dataset)
        self.real_features = metrics.features(classifier, zoo.real_images(dataset, "test"))

    def evaluate(self, steps: int) -> dict:
        """Accuracy and Fréchet distance of samples at ``steps``, per seed set, with mean and spread."""
        from ..zoo import metrics

        labels = torch.arange(self.samples) % self.classes
        inputs = self.inputs(self.samples)
        per_set = []
        for seed in SEED_SETS:
            images = torch.cat([
                self.call(inputs[i : i + CHUNK], steps, seed + i) for i in range(0, self.samples, CHUNK)
            ])
            per_set.append({
                "accuracy": metrics.class_accuracy(self.classifier, images, labels),
                "frechet": metrics.frechet_distance(metrics.features(self.classifier, images), self.real_features),
            })
        return {"samples": self.samples, "seed_sets": list(SEED_SETS), **summarise(per_set), "per_seed_set": per_set}


def summarise(per_set: list[dict]) -> dict:
    """Mean and spread (max - min) of every score over the seed sets."""
    summary = {}
    for key in per_set[0]:
        values = [s[key] for s in per_set]
        summary[key] = sum(values) / len(values)
        summary[f"{key}_spread"] = max(values) - min(values)
    return summary
