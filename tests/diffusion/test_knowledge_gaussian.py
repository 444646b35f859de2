"""Knowledge control on Gaussian data, where the score and the alignment network have closed forms.

Data x₀ ~ N(μ, C) in D dimensions, the statistic F(x₀) = mean(x₀). The exact denoiser predicts
E[x₀ | x_t] = μ + √ᾱ·C·(ᾱ·C + (1−ᾱ)·I)⁻¹·(x_t − √ᾱ·μ), and the exact alignment network is
U(x_t) = E[F(x₀) | x_t] = mean(E[x₀ | x_t]). Guided chains must end on F₀ = E[F] + n·std(F) for DDPM with every
step and DDIM with 50, with one λ for any D and any units of F.
"""

from __future__ import annotations

import pytest
import torch

from earthcast.diffusion import DDIMSampler, DDPMSampler, KnowledgeGuidance, NoiseSchedule
from earthcast.diffusion.schedulers import scaled_linear_betas
from earthcast.errors import UserError

SCHEDULE = NoiseSchedule(scaled_linear_betas(1000, 1e-4, 2e-2))  # the PreDiff configs' schedule
SAMPLERS = {"ddpm-1000": DDPMSampler(SCHEDULE), "ddim-50": DDIMSampler(SCHEDULE, steps=50, eta=0.0)}


class Gaussian:
    """N(μ, C) with correlated, unequal variances (not the isotropic case the Gauss–Newton step is exact for)."""

    def __init__(self, dim: int, correlation: float = 0.3, units: float = 1.0):
        self.dim, self.units = dim, units
        self.mean = torch.linspace(-0.5, 0.5, dim, dtype=torch.float64)
        std = torch.linspace(0.5, 1.5, dim, dtype=torch.float64)
        mixing = (1 - correlation) * torch.eye(dim, dtype=torch.float64) + correlation
        self.cov = std[:, None] * mixing * std[None, :]
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(self.cov)
        weights = torch.full((dim,), 1.0 / dim, dtype=torch.float64)
        self.f_mean = float(weights @ self.mean) * units
        self.f_std = float((weights @ self.cov @ weights).sqrt()) * units

    def posterior_mean(self, x_t: torch.Tensor, t) -> torch.Tensor:
        a = SCHEDULE.alpha_bar(int(t[0]))
        gain = a.sqrt() * self.eigenvalues / (a * self.eigenvalues + 1 - a)  # C·(ᾱC + (1−ᾱ)I)⁻¹ in C's eigenbasis
        return self.mean + ((x_t - a.sqrt() * self.mean) @ self.eigenvectors * gain) @ self.eigenvectors.T

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the exact ε̂
        a = SCHEDULE.alpha_bar(int(t[0]))
        return (x_t - a.sqrt() * self.posterior_mean(x_t, t)) / (1 - a).sqrt()

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True) * self.units

    def align(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the exact U
        return self.statistic(self.posterior_mean(x_t, t))


def guided(data: Gaussian, sampler, n: float, scale: float = 1.0, step: str = "gauss_newton", batch: int = 32,
           seed: int = 0, reads: str = "noisy") -> tuple[torch.Tensor, float, KnowledgeGuidance]:
    """(F of the final samples, F₀, the guidance with its per-step energies); `reads` noisy: the exact U(x_t),
    clean: the plug-in F(x̂₀) (knowledge.estimator=decoded with an identity decoder)."""
    f0 = data.f_mean + n * data.f_std
    predict = data.align if reads == "noisy" else (lambda x0, t: data.statistic(x0))
    guidance = KnowledgeGuidance(predict, torch.full((batch, 1), f0, dtype=torch.float64),
                                 torch.tensor([data.f_std], dtype=torch.float64), scale, step, reads=reads)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(batch, data.dim, generator=g, dtype=torch.float64)
    x0 = sampler.sample(data.denoise, x_T, generator=g, guidance=guidance)
    guidance.check()
    return data.statistic(x0).squeeze(1), f0, guidance


@pytest.mark.parametrize("reads", ["noisy", "clean"])
@pytest.mark.parametrize("sampler", SAMPLERS, ids=str)
@pytest.mark.parametrize("n", [-4.0, 0.0, 2.0])
def test_guided_ddpm_and_ddim_land_on_f0(sampler, n, reads):
    data = Gaussian(dim=16)
    achieved, f0, guidance = guided(data, SAMPLERS[sampler], n, reads=reads)
    # every sample ends within 2 % of the statistic's prior spread from F₀, against a start n·std(F) away
    assert (achieved - f0).abs().max() < 0.02 * data.f_std
    energies = torch.stack(guidance.energies)  # steps × samples, in units of std(F)²
    assert bool(torch.isfinite(energies).all()) and energies.max() < 4 * max(n * n, 1) + 10
    assert energies[-1].max() < 0.1  # U is within 0.3·std(F) of F₀ before the last step, for every sample
    assert guidance.report()["capped_fraction"] == 0  # the trust region never had to act


def closed_fraction(data: Gaussian, scale: float, step: str) -> float:
    """Mean over samples of (F guided − F unguided)/(F₀ − F unguided), same noise, DDIM-50, n = 2."""
    guided_f, f0, _ = guided(data, SAMPLERS["ddim-50"], 2.0, scale=scale, step=step, batch=8)
    plain_f, _, _ = guided(data, SAMPLERS["ddim-50"], 2.0, scale=0.0, step=step, batch=8)
    return float(((guided_f - plain_f) / (f0 - plain_f)).mean())


def test_one_scale_for_any_latent_size_and_units():
    """D = 16 and D = 1024 (64×, the quickstart-to-paper ratio of latent sizes), F in units 1 and 255: λ = 1
    lands on F₀ in every case, and any λ closes the same fraction whatever the units of F. The paper's step
    (−λ·Σ_t·∇‖U − F₀‖) does not carry over: its pull scales with ‖∇U‖, i.e. with D and the units."""
    for dim, units in ((16, 1.0), (1024, 1.0), (16, 255.0)):
        assert closed_fraction(Gaussian(dim, units=units), 1.0, "gauss_newton") > 0.999
    partial = closed_fraction(Gaussian(16), 0.2, "gauss_newton")
    assert 0.3 < partial < 0.9  # λ < 1 pulls part of the way
    assert closed_fraction(Gaussian(16, units=255.0), 0.2, "gauss_newton") == pytest.approx(partial, abs=1e-9)
    paper = [closed_fraction(Gaussian(dim, units=units), 1.0, "paper")
             for dim, units in ((16, 1.0), (1024, 1.0), (16, 255.0))]
    # measured: 0.72 at D = 16, 0.19 at D = 1024, 1.00 with F in units of 255 (a pull 255× stronger)
    assert paper[0] - paper[1] > 0.4 and paper[2] - paper[0] > 0.2


def test_guided_ddpm_samples_the_constrained_gaussian():
    """Isotropic N(μ, I), λ = 1: DDPM samples x₀ | mean(x₀) = F₀, i.e. mean μ + (F₀ − mean μ)·1 and
    covariance I − 11ᵀ/D: the guidance moves the constrained direction only, the others keep their spread."""
    data = Gaussian(dim=6, correlation=0.0)
    data.eigenvalues = torch.ones(6, dtype=torch.float64)
    data.f_std = 6 ** -0.5
    f0 = data.f_mean + 2 * data.f_std
    guidance = KnowledgeGuidance(data.align, torch.full((512, 1), f0, dtype=torch.float64),
                                 torch.tensor([data.f_std], dtype=torch.float64), 1.0)
    g = torch.Generator().manual_seed(1)
    x0 = SAMPLERS["ddpm-1000"].sample(data.denoise, torch.randn(512, 6, generator=g, dtype=torch.float64),
                                      generator=g, guidance=guidance)
    ones = torch.ones(6, dtype=torch.float64)
    assert torch.allclose(x0.mean(dim=0), data.mean + (f0 - data.f_mean) * ones, atol=0.1)
    expected = torch.eye(6, dtype=torch.float64) - torch.outer(ones, ones) / 6
    assert torch.allclose(torch.cov(x0.T), expected, atol=0.15)


def test_trust_region_bounds_a_step_where_the_alignment_is_flat():
    """A nearly flat U (gradient 10⁻⁶) asks for a huge Gauss–Newton step; the trust region caps its RMS at
    max_shift (latent standard deviations)."""
    x_t = torch.randn(3, 2, 4, dtype=torch.float64)
    target = torch.ones(3, 1, dtype=torch.float64)
    guidance = KnowledgeGuidance(lambda z, t: 1e-6 * z.flatten(1).mean(dim=1, keepdim=True), target,
                                 torch.ones(1, dtype=torch.float64), scale=1.0, max_shift=0.5)
    alpha_bar = SCHEDULE.alpha_bar(100)
    x0 = torch.zeros_like(x_t)
    moved = guidance.prediction(x_t, 100, x0, alpha_bar)
    rms = moved.flatten(1).pow(2).mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.full((3,), 0.5, dtype=torch.float64))
    report = guidance.report()
    assert report["capped_fraction"] == 1.0 and report["largest_correction"] > 1e3


def test_divergence_stops_with_one_line():
    target = torch.zeros(2, 1, dtype=torch.float64)
    sigma = torch.ones(1, dtype=torch.float64)
    x_t = torch.randn(2, 5, dtype=torch.float64)
    # an estimate that drifts away from F₀ as the chain proceeds (here: it ignores z and grows as t falls)
    drifting = KnowledgeGuidance(lambda z, t: (1000 - t.double()).unsqueeze(1) + 0 * z.sum(1, keepdim=True),
                                 target, sigma, 1.0)
    for t in (999, 500, 0):
        drifting.prediction(x_t, t, torch.zeros_like(x_t), SCHEDULE.alpha_bar(t))
    with pytest.raises(UserError, match=r"knowledge control diverged: .* grew from 1 to 1e\+06 .* lower "
                                        r"knowledge.scale") as error:
        drifting.check()
    assert "\n" not in str(error.value)
    broken = KnowledgeGuidance(lambda z, t: z.sum(1, keepdim=True) * float("nan"), target, sigma, 1.0)
    with pytest.raises(UserError, match="not finite at diffusion step t=7"):
        broken.prediction(x_t, 7, torch.zeros_like(x_t), SCHEDULE.alpha_bar(7))
