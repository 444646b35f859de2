"""Noise schedules against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from earthcast.diffusion import NoiseSchedule
from earthcast.diffusion.schedulers import cosine_betas, linear_betas, scaled_linear_betas


def test_beta_tables():
    assert torch.allclose(linear_betas(3, 0.1, 0.3), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    assert torch.allclose(scaled_linear_betas(2, 0.01, 0.04), torch.tensor([0.01, 0.04], dtype=torch.float64))
    betas = cosine_betas(1000)
    alpha_bar = torch.cumprod(1 - betas, 0)
    # ᾱ(t) = f(t)/f(0) with f = cos²(π/2 (t/T + s)/(1 + s))
    f = lambda x: math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert alpha_bar[499].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-9)
    assert betas.max() <= 0.999


def test_forward_marginal_moments(schedule):
    torch.manual_seed(0)
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    for t in (0, 37, 99):
        x_t = schedule.add_noise(x0, torch.randn_like(x0), t)
        a = schedule.alpha_bar(t).item()
        assert x_t.mean().item() == pytest.approx(math.sqrt(a) * 0.7, abs=4e-3)
        assert x_t.var().item() == pytest.approx(1 - a, rel=2e-2, abs=1e-5)


def test_per_sample_timesteps_broadcast(schedule):
    x0, noise = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    t = torch.tensor([0, 50, 99])
    batched = schedule.add_noise(x0, noise, t)
    for i in range(3):
        assert torch.allclose(batched[i], schedule.add_noise(x0[i], noise[i], int(t[i])))


@pytest.mark.parametrize("prediction_type", ["eps", "v", "sample"])
def test_split_prediction_inverts_the_training_target(schedule, prediction_type):
    x0, noise = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    t = torch.tensor([1, 20, 60, 98])
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.training_target(x0, noise, t, prediction_type)
    x0_hat, eps_hat = schedule.split_prediction(x_t, target, t, prediction_type)
    assert torch.allclose(x0_hat, x0, atol=1e-8) and torch.allclose(eps_hat, noise, atol=1e-8)


def test_posterior_matches_closed_form():
    schedule = NoiseSchedule(linear_betas(50, 1e-3, 0.2))
    x0, x_t = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    betas = schedule.betas
    alphas = 1 - betas
    for t in (1, 10, 49):
        a_bar, a_bar_prev = schedule.alphas_cumprod[t], schedule.alphas_cumprod[t - 1]
        mean, variance = schedule.posterior(x0, x_t, t)
        expected_mean = (a_bar_prev.sqrt() * betas[t] / (1 - a_bar)) * x0 \
            + (alphas[t].sqrt() * (1 - a_bar_prev) / (1 - a_bar)) * x_t
        assert torch.allclose(mean, expected_mean)
        assert variance.item() == pytest.approx(((1 - a_bar_prev) / (1 - a_bar) * betas[t]).item())
    mean, variance = schedule.posterior(x0, x_t, 0)  # the last step returns the estimate itself
    assert torch.allclose(mean, x0) and variance.item() == 0
