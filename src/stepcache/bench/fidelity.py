"""Fidelity of cached images against the uncached ones: PSNR, SSIM and a feature distance.

Images are (B, C, H, W) tensors in [0, 1]; every score is the mean over the batch.

* ``psnr``: 10 log10(1 / MSE), per image, in dB; identical images give +inf.
* ``ssim``: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5, shrunk to
  the image size for tiny images), K1 = 0.01, K2 = 0.03, averaged over channels.
* ``feature_distance``: an LPIPS-style distance without learned weights or downloads:
  activations of every ReLU of a classifier's feature trunk (for zoo models, the zoo's
  own classifier) are unit-normalised over channels, and the squared differences are
  averaged over space and summed over layers. 0 for identical images; it grows with
  perceptual change as LPIPS does, but its scale is only comparable for one classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean PSNR in dB of ``images`` against ``reference`` (both in [0, 1]); +inf when identical."""
    _check_pair(images, reference)
    mse = (images.double() - reference.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1 / mse)).mean().item()


def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM of ``images`` against ``reference`` (both in [0, 1]); 1.0 when identical."""
    _check_pair(images, reference)
    x, y = images.double(), reference.double()
    window = _gaussian_window(min(SSIM_WINDOW, *_odd_floor(x.shape[-2:])), x.shape[1]).to(x.device)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, window, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = _K1**2, _K2**2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.mean().item()


@torch.no_grad()
def feature_distance(trunk: nn.Sequential, images: torch.Tensor, reference: torch.Tensor) -> float:
    """LPIPS-style distance in the ReLU activations of ``trunk`` (see the module docstring).

    ``trunk`` takes images in [-1, 1], as the ``body`` of the zoo classifiers does.
    """
    _check_pair(images, reference)
    param = next(trunk.parameters())
    x = images.to(param.device, param.dtype) * 2 - 1
    y = reference.to(param.device, param.dtype) * 2 - 1
    total = torch.zeros(len(x), device=param.device, dtype=torch.float64)
    for layer in trunk:
        x, y = layer(x), layer(y)
        if isinstance(layer, nn.ReLU):
            diff = _unit(x) - _unit(y)
            total += diff.pow(2).sum(1).reshape(len(diff), -1).mean(1).double()
    return total.mean().item()


def _unit(activations: torch.Tensor) -> torch.Tensor:
    return activations / (activations.norm(dim=1, keepdim=True) + 1e-10)


def _gaussian_window(size: int, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size).contiguous()


def _odd_floor(sizes) -> list[int]:
    return [s if s % 2 else s - 1 for s in sizes]


def _check_pair(images: torch.Tensor, reference: torch.Tensor) -> None:
    if images.shape != reference.shape or images.dim() != 4:
        raise ValueError(
            f"images must be two (B, C, H, W) batches of one shape, got {tuple(images.shape)} "
            f"and {tuple(reference.shape)}"
        )

