"""The zoo trainer's losses and timestep sampling."""

import dataclasses

import pytest
import torch

from stepcache.zoo import nets, registry
from stepcache.zoo.train import _timesteps, noise_loss, velocity_loss

SCHEDULER = nets.training_scheduler()


def _snr(t: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = SCHEDULER.alphas_cumprod[t]
    return alphas_cumprod / (1 - alphas_cumprod)


def _batch(offsets: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and a prediction off by a constant per sample, so sample i's MSE is offsets[i] ** 2."""
    noise = torch.randn(len(offsets), 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return noise + torch.tensor(offsets)[:, None, None, None], noise


def test_without_gamma_every_timestep_counts_the_same():
    prediction, noise = _batch([1.0, 2.0])
    t = torch.tensor([0, 999])
    assert noise_loss(prediction, noise, SCHEDULER, t, None).item() == pytest.approx((1 + 4) / 2)


def test_min_snr_caps_the_weight_of_nearly_clean_timesteps():
    t = torch.tensor([0, 100, 999])
    snr = _snr(t)
    assert snr[0] > snr[1] > 5 > snr[2]  # two nearly clean samples, one noisy
    prediction, noise = _batch([1.0, 1.0, 1.0])
    expected = (5 / snr[0] + 5 / snr[1] + 1) / 3
    assert noise_loss(prediction, noise, SCHEDULER, t, 5.0).item() == pytest.approx(expected.item(), rel=1e-5)
    # A larger gamma gives clean samples more weight, up to the plain MSE.
    assert noise_loss(prediction, noise, SCHEDULER, t, 50.0) > noise_loss(prediction, noise, SCHEDULER, t, 5.0)


def test_velocity_loss_is_plain_mse_or_min_snr_on_the_noise():
    x0 = torch.randn(3, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1))  # a video batch
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 100, 999])
    velocity = SCHEDULER.get_velocity(x0, noise, t)
    prediction = velocity + 0.5
    assert velocity_loss(prediction, velocity, SCHEDULER, t, None).item() == pytest.approx(0.25)
    # with Min-SNR's weights for v, min(SNR, gamma) / (SNR + 1), per sample
    weights = _snr(t).clamp(max=5.0) / (_snr(t) + 1)
    assert velocity_loss(prediction, velocity, SCHEDULER, t, 5.0).item() == pytest.approx(
        (0.25 * weights).mean().item(), rel=1e-5)


def test_timestep_power_zero_draws_as_ddpm_and_one_weights_noisy_steps_linearly():
    uniform = registry.get("dit-digits")
    assert uniform.timestep_power == 0
    # power 0 keeps the DDPM draw exactly: the shipped image models retrain to the same weights
    expected = torch.randint(0, 1000, (uniform.batch_size,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(_timesteps(1000, uniform, torch.Generator().manual_seed(3)), expected)
    linear = dataclasses.replace(uniform, batch_size=200_000, timestep_power=1.0)
    t = _timesteps(1000, linear, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 999
    # density ~ t: P(t < 500) = 1/4 and E[t] = 2/3 * 1000; bounds: 5 binomial/normal standard errors at 200k draws
    assert (t < 500).float().mean().item() == pytest.approx(0.25, abs=5 * (0.25 * 0.75 / 200_000) ** 0.5)
    assert t.float().mean().item() == pytest.approx(666.7 - 0.5, abs=5 * 236 / 200_000 ** 0.5)
