"""Offline quality scores for zoo samples, using the zoo's own classifiers instead of Inception.

* ``frechet_distance``: the FID formula applied to classifier penultimate features,
  ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. Values are only
  comparable between sample sets scored by the same classifier and with
  similar sample counts (the estimate is biased upwards for small sets).
* ``class_accuracy``: fraction of images the classifier assigns to the intended class.
"""

import numpy as np
import torch


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (tensors or arrays)."""
    a, b = _as_float64(feats_a), _as_float64(feats_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)); the inner matrix is
    # symmetric PSD, so eigh is stable where a general sqrtm of S_a S_b is not.
    root_a = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


@torch.no_grad()
def class_accuracy(classifier: torch.nn.Module, images: torch.Tensor, labels) -> float:
    """Fraction of ``images`` (B, C, H, W in [0, 1]) that ``classifier`` labels as ``labels``."""
    predicted = classifier(images.to(classifier.device, classifier.dtype)).argmax(1).cpu()
    return (predicted == torch.as_tensor(labels).cpu()).float().mean().item()


@torch.no_grad()
def features(classifier: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate classifier features of ``images`` (in [0, 1]), computed in batches."""
    chunks = images.to(classifier.device, classifier.dtype).split(batch_size)
    return torch.cat([classifier.features(c).cpu() for c in chunks])


def _as_float64(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
