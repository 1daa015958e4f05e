import math

import pytest
import torch
from torch import nn

from stepcache.bench import fidelity


def images(seed=0, shape=(2, 3, 16, 16)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def noisy(x, level, seed=1):
    return (x + level * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_identical_images_are_perfect():
    x = images()
    assert fidelity.psnr(x, x) == math.inf
    assert fidelity.ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_a_known_error():
    x = torch.full((1, 1, 8, 8), 0.5)
    assert fidelity.psnr(x + 0.1, x) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(100)


def test_ssim_of_a_constant_shift_is_the_luminance_term():
    x = torch.full((1, 1, 16, 16), 0.5)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)  # no variance: only the luminance term remains
    assert fidelity.ssim(x + 0.1, x) == pytest.approx(expected)


def test_scores_get_worse_with_more_noise():
    x = images()
    levels = [0.01, 0.05, 0.2]
    psnrs = [fidelity.psnr(noisy(x, s), x) for s in levels]
    ssims = [fidelity.ssim(noisy(x, s), x) for s in levels]
    assert psnrs == sorted(psnrs, reverse=True) and ssims == sorted(ssims, reverse=True)


def test_feature_distance_is_zero_for_identical_images_and_grows_with_noise():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 16), nn.ReLU())
    x = images()
    assert fidelity.feature_distance(trunk, x, x) == 0.0
    distances = [fidelity.feature_distance(trunk, noisy(x, s), x) for s in (0.01, 0.1, 0.5)]
    assert 0 < distances[0] < distances[1] < distances[2]


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        fidelity.psnr(images(), images(shape=(1, 3, 16, 16)))
