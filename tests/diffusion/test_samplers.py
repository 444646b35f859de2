"""Samplers (DDPM, DDIM, guidance) against closed forms."""

from __future__ import annotations

import pytest
import torch

from earthcast.diffusion import DDIMSampler, DDPMSampler, NoiseSchedule, Sampler, build_sampler
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


class Shift:
    """A guidance that moves x̂₀ by `dx0` and/or the transition mean by `dmean`, and records its calls."""

    def __init__(self, dx0=None, dmean=None):
        self.dx0, self.dmean, self.seen = dx0, dmean, []

    def prediction(self, x_t, t, x0, alpha_bar):
        self.seen.append(("prediction", t, alpha_bar.item()))
        return None if self.dx0 is None else x0 + self.dx0

    def mean_shift(self, x_t, t, variance):
        self.seen.append(("mean", t, variance.item()))
        return None if self.dmean is None else torch.full_like(x_t, self.dmean)


def test_guidance_mean_shift_is_added_with_the_ancestral_variance():
    schedule = NoiseSchedule(linear_betas(10, 1e-3, 0.1))
    sampler = DDIMSampler(schedule, steps=10, eta=0.0)
    x = torch.zeros(1, 2, dtype=torch.float64)
    plain, _ = sampler.step(Linear(), x, 5, 4)
    guidance = Shift(dmean=1.0)
    guided, _ = sampler.step(Linear(), x, 5, 4, guidance=guidance)
    assert torch.allclose(guided - plain, torch.ones_like(x))
    assert guidance.seen[1] == ("mean", 5, pytest.approx(schedule.step_variance(5, 4, eta=1.0).item()))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_guidance_prediction_correction_is_a_score_correction(eta):
    """A corrected x̂₀ keeps x_t = √ᾱ·x̂₀ + √(1−ᾱ)·ε̂: the transition is the one for (x̂₀ + δ, ε̂ − √ᾱ/√(1−ᾱ)·δ),
    and the last transition returns the corrected x̂₀ itself."""
    schedule = NoiseSchedule(linear_betas(10, 1e-3, 0.1))
    sampler = Sampler(schedule, steps=10, eta=eta)
    x = torch.randn(3, 2, dtype=torch.float64)
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    noise = torch.randn(3, 2, dtype=torch.float64)
    guided, x0 = sampler.step(Linear(), x, 5, 4, guidance=Shift(dx0=delta), noise=noise)
    a = schedule.alpha_bar(5)
    x0_plain, eps_plain = schedule.split_prediction(x, 0.3 * x, 5, "eps")
    mean, variance = schedule.transition(x0_plain + delta, eps_plain - (a / (1 - a)).sqrt() * delta, 5, 4, eta)
    expected = mean + variance.sqrt() * noise if eta > 0 else mean
    assert torch.allclose(guided, expected, atol=1e-12)
    assert torch.allclose(x0, x0_plain + delta, atol=1e-12)
    last, _ = sampler.step(Linear(), x, 0, -1, guidance=Shift(dx0=delta))
    assert torch.allclose(last, schedule.split_prediction(x, 0.3 * x, 0, "eps")[0] + delta, atol=1e-12)


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


def test_ddim_50_and_ddpm_1000_draw_the_same_mixture():
    """With the exact score of a non-Gaussian law (a two-component mixture), deterministic DDIM-50 and ancestral
    DDPM-1000 agree in mean, spread and mode weights: a gap between them on a trained model is the model's
    score error (integrated differently by the ODE and the SDE), not the sampler's arithmetic."""
    schedule = NoiseSchedule(scaled_linear_betas(1000, 1e-4, 2e-2))
    weights = torch.tensor([0.7, 0.3], dtype=torch.float64)
    means, stds = torch.tensor([-1.0, 2.0], dtype=torch.float64), torch.tensor([0.3, 0.5], dtype=torch.float64)

    def exact(x_t, t):  # E[ε | x_t] = (x_t − √ᾱ·E[x₀ | x_t]) / √(1−ᾱ), mixing the components' posteriors
        a = schedule.alpha_bar(int(t[0]))
        var = a * stds**2 + 1 - a
        log_w = weights.log() - 0.5 * (x_t - a.sqrt() * means) ** 2 / var - 0.5 * var.log()
        resp = torch.softmax(log_w, dim=1)
        x0 = means + a.sqrt() * stds**2 / var * (x_t - a.sqrt() * means)
        return (x_t - a.sqrt() * (resp * x0).sum(dim=1, keepdim=True)) / (1 - a).sqrt()

    x_T = torch.randn(4000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ddim = DDIMSampler(schedule, steps=50, eta=0.0).sample(exact, x_T)
    ddpm = DDPMSampler(schedule).sample(exact, x_T, generator=torch.Generator().manual_seed(1))
    for draws in (ddim, ddpm):
        assert draws.mean().item() == pytest.approx(0.7 * -1.0 + 0.3 * 2.0, abs=0.05)
        assert draws.std().item() == pytest.approx(1.4241, rel=0.03)  # √(Σ w(σ² + μ²) − mean²)
        assert (draws > 0.5).double().mean().item() == pytest.approx(0.3, abs=0.02)
