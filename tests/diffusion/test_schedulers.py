"""Noise-schedule and sampler math against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from earthcast.diffusion import DDIMSampler, DDPMSampler, NoiseSchedule, build_sampler
from earthcast.diffusion.samplers import trailing_timesteps
from earthcast.diffusion.schedulers import cosine_betas, linear_betas, scaled_linear_betas
from earthcast.errors import UserError


@pytest.fixture(params=["linear", "scaled_linear", "cosine"])
def schedule(request) -> NoiseSchedule:
    return NoiseSchedule.from_config({"beta_schedule": request.param, "num_timesteps": 100})


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
        NoiseSchedule.from_config({"beta_schedule": "quadratic"})
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
