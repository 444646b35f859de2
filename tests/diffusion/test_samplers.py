"""Samplers (DDPM, DDIM, guidance) against closed forms."""

from __future__ import annotations

import pytest
import torch

from earthcast.diffusion import DDIMSampler, DDPMSampler, NoiseSchedule, build_sampler
from earthcast.diffusion.samplers import trailing_timesteps
from earthcast.diffusion.schedulers import linear_betas, scaled_linear_betas
from earthcast.errors import UserError


def test_ddim_eta_one_all_steps_is_the_ddpm_posterior(schedule):
    """With η = 1 and every step, the DDIM transition equals q(x_{t−1} | x_t, x̂_0) in mean and variance."""
    x0, noise = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    for t in range(99, 0, -7):
        x_t = schedule.add_noise(x0, noise, t)
        x0_hat, eps_hat = schedule.split_prediction(x_t, noise, t, "eps")
        mean, variance = schedule.transition(x0_hat, eps_hat, t, t - 1, eta=1.0)
        post_mean, post_variance = schedule.posterior(x0_hat, x_t, t)
        assert torch.allclose(mean, post_mean, atol=1e-10)
        assert variance.item() == pytest.approx(post_variance.item(), rel=1e-10)


class Linear:
    """A fixed 'denoiser': ε̂ = 0.3·x_t (deterministic, no weights)."""

    def __call__(self, x_t, t):
        return 0.3 * x_t


def test_ddpm_sampler_follows_the_posterior_chain():
    schedule = NoiseSchedule(linear_betas(20, 1e-3, 0.1))
    x_T = torch.randn(3, 4, dtype=torch.float64)
    sampler = DDPMSampler(schedule)
    assert sampler.timesteps == list(range(19, -1, -1))
    g = torch.Generator().manual_seed(1)
    result = sampler.sample(Linear(), x_T, generator=g)
    # the same chain by hand: posterior mean + √β̃ z with the same noise draws
    g = torch.Generator().manual_seed(1)
    x = x_T
    for t in range(19, -1, -1):
        x0_hat, _ = schedule.split_prediction(x, 0.3 * x, t, "eps")
        mean, variance = schedule.posterior(x0_hat, x, t)
        x = mean + variance.sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype) if t > 0 else mean
    assert torch.allclose(result, x, atol=1e-10)


def test_ddim_eta_zero_is_deterministic_and_ignores_the_generator():
    schedule = NoiseSchedule(scaled_linear_betas(100, 1e-4, 2e-2))
    sampler = DDIMSampler(schedule, steps=10, eta=0.0)
    x_T = torch.randn(2, 5)
    first = sampler.sample(Linear(), x_T, generator=torch.Generator().manual_seed(1))
    second = sampler.sample(Linear(), x_T, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, second)
    stochastic = DDIMSampler(schedule, steps=10, eta=1.0)
    assert not torch.equal(stochastic.sample(Linear(), x_T, generator=torch.Generator().manual_seed(1)),
                           stochastic.sample(Linear(), x_T, generator=torch.Generator().manual_seed(2)))


def test_ddim_recovers_a_point_mass_exactly():
    """Data = a single point c: the ideal ε̂ is known in closed form and DDIM (η = 0) lands on c in any steps."""
    schedule = NoiseSchedule(scaled_linear_betas(1000, 1e-4, 2e-2))
    c = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    def ideal(x_t, t):
        a = schedule.alpha_bar(t).reshape(-1, 1).to(x_t)
        return (x_t - a.sqrt() * c) / (1 - a).sqrt()

    x_T = torch.randn(4, 3, dtype=torch.float64)
    for steps in (1, 7, 50):
        out = DDIMSampler(schedule, steps=steps, eta=0.0).sample(ideal, x_T)
        assert torch.allclose(out, c.expand_as(out), atol=1e-8)


def test_trailing_timesteps_and_config_errors():
    assert trailing_timesteps(1000, 4) == [999, 749, 499, 249]
    assert trailing_timesteps(10, 10) == list(range(9, -1, -1))
    schedule = NoiseSchedule(linear_betas(10, 1e-3, 0.1))
    with pytest.raises(UserError, match="sampler.steps"):
        DDIMSampler(schedule, steps=11)
    with pytest.raises(UserError, match="unknown sampler"):
        build_sampler({"name": "euler"}, schedule, "eps")
    with pytest.raises(UserError, match="beta_schedule"):
        NoiseSchedule.from_config({"beta_schedule": "quadratic", "num_timesteps": 10})
    sampler = build_sampler({"name": "ddim", "steps": 5, "eta": 0.5}, schedule, "v")
    assert sampler.eta == 0.5 and sampler.steps == 5 and sampler.prediction_type == "v"


def test_guidance_shift_is_added_to_the_mean_with_the_ancestral_variance():
    schedule = NoiseSchedule(linear_betas(10, 1e-3, 0.1))
    seen = []

    def guidance(x_t, t, variance):
        seen.append((t, variance.item()))
        return torch.ones_like(x_t)

    sampler = DDIMSampler(schedule, steps=10, eta=0.0)
    x = torch.zeros(1, 2, dtype=torch.float64)
    plain, _ = sampler.step(Linear(), x, 5, 4)
    guided, _ = sampler.step(Linear(), x, 5, 4, guidance=guidance)
    assert torch.allclose(guided - plain, torch.ones_like(x))
    assert seen[0][1] == pytest.approx(schedule.step_variance(5, 4, eta=1.0).item())


@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_ddim_with_eta_one_and_every_step_is_the_ddpm_sampler(prediction_type):
    """Same noise draws, same chain: DDIM(η = 1, S = T) reproduces ancestral DDPM sample for sample."""
    schedule = NoiseSchedule(scaled_linear_betas(30, 1e-3, 0.1))
    x_T = torch.randn(3, 4, dtype=torch.float64)
    ddpm = DDPMSampler(schedule, prediction_type=prediction_type)
    ddim = DDIMSampler(schedule, steps=30, eta=1.0, prediction_type=prediction_type)
    assert ddim.transitions() == ddpm.transitions()
    first = ddpm.sample(Linear(), x_T, generator=torch.Generator().manual_seed(3))
    second = ddim.sample(Linear(), x_T, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(first, second, atol=1e-12)


def test_respaced_ddim_lands_close_to_the_full_chain_for_a_smooth_denoiser():
    """η = 0 with 50 of 1000 steps follows the all-step probability-flow path up to its discretisation error
    (a few per cent for this Gaussian)."""
    schedule = NoiseSchedule(scaled_linear_betas(1000, 1e-4, 2e-2))
    x_T = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def gaussian(x_t, t):  # the exact ε̂ for data ~ N(0, 0.25 I)
        a = schedule.alpha_bar(t).reshape(-1, 1).to(x_t)
        return (1 - a).sqrt() * x_t / (0.25 * a + 1 - a)

    full = DDIMSampler(schedule, steps=1000, eta=0.0).sample(gaussian, x_T)
    short = DDIMSampler(schedule, steps=50, eta=0.0).sample(gaussian, x_T)
    assert full.std().item() == pytest.approx(0.5, rel=0.15)
    assert bool(((short - full).abs() <= 0.05 * full.abs() + 1e-3).all())
