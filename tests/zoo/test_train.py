"""The zoo trainer's loss weighting."""

import torch

from stepcache.zoo import nets
from stepcache.zoo.train import loss_weights


def test_plain_noise_mse_weighs_every_timestep_equally():
    t = torch.tensor([0, 250, 999])
    assert torch.equal(loss_weights(nets.training_scheduler(), t, None), torch.ones(3))


def test_min_snr_caps_the_weight_of_nearly_clean_timesteps():
    scheduler = nets.training_scheduler()
    t = torch.arange(1000)
    alphas_cumprod = scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = loss_weights(scheduler, t, 5.0)
    noisy = snr <= 5
    assert noisy.any() and (~noisy).any()
    # Noisy timesteps keep weight 1; cleaner ones get gamma / SNR, which falls as t -> 0.
    assert torch.allclose(weights[noisy], torch.ones(int(noisy.sum())))
    assert torch.allclose(weights[~noisy], 5 / snr[~noisy])
    assert weights[0] < 1e-3 and torch.all(weights[:-1] <= weights[1:])
