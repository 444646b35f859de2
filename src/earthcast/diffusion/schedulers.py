"""Noise schedules of denoising diffusion: the forward process and the reverse transitions, as pure math.

Nothing here has weights or state beyond the β table: a `NoiseSchedule` is built from its config, and the
samplers (earthcast.diffusion.samplers) walk it backwards with whatever denoiser they are given.

Conventions
    timesteps t = 0 … T−1;  β_t the variance added at step t;  ᾱ_t = Π_{s≤t} (1 − β_s);  ᾱ_{−1} = 1
    forward marginal  q(x_t | x_0) = N(√ᾱ_t · x_0, (1 − ᾱ_t) I)
    a denoiser predicts ε ("eps"), the velocity v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 ("v", Salimans & Ho 2022),
    or x_0 itself ("sample"); `split_prediction` turns any of them into the pair (x̂_0, ε̂).

Reverse transitions between any t > s (s = −1 is the clean sample) follow DDIM (Song et al., 2021, Eq. 12):
    x_s = √ᾱ_s · x̂_0 + √(1 − ᾱ_s − σ²) · ε̂ + σ·z,   σ² = η² · (1 − ᾱ_s)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_s)
With η = 1 and s = t − 1 this *is* the DDPM posterior q(x_{t−1} | x_t, x̂_0) (Ho et al., 2020, Eq. 7), so
ancestral sampling over a shorter subsequence is DDIM with η = 1 on the respaced chain, and η = 0 is the
deterministic DDIM sampler. All coefficients are computed in float64 and cast to the data's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from earthcast.errors import UserError

PREDICTION_TYPES = ("eps", "v", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β linear in t (Ho et al., 2020: 1e-4 → 2e-2 over 1000 steps)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """√β linear in t: what latent-diffusion code (and PreDiff's configs) call "linear"."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2


def cosine_betas(num_timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ(t) = cos²(π/2 · (t/T + s)/(1 + s)) normalised to ᾱ(0) = 1 (Nichol & Dhariwal, 2021); β capped at
    `max_beta` because the last step would otherwise destroy the signal with β = 1."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample coefficients (B,) or a scalar → shape (B, 1, …, 1) in the dtype/device of `like`."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.ndim == 0:
        return values
    return values.reshape(-1, *([1] * (like.ndim - 1)))


class NoiseSchedule:
    """The β table and everything derived from it (see the module docstring for the conventions)."""

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every β must lie in (0, 1)")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)

    @property
    def num_timesteps(self) -> int:
        return self.betas.numel()

    @classmethod
    def from_config(cls, cfg: Mapping) -> NoiseSchedule:
        """model.diffusion: {beta_schedule: linear|scaled_linear|cosine, num_timesteps, beta_start, beta_end}
        (configs/model/prediff_ldm.yaml); cosine takes an optional cosine_offset instead of the β range."""
        kind = str(cfg["beta_schedule"])
        steps = int(cfg["num_timesteps"])
        if steps < 1:
            raise UserError(f"model.diffusion.num_timesteps={steps}; it must be ≥ 1 (1000 is usual)")
        if kind == "linear":
            return cls(linear_betas(steps, float(cfg["beta_start"]), float(cfg["beta_end"])))
        if kind == "scaled_linear":
            return cls(scaled_linear_betas(steps, float(cfg["beta_start"]), float(cfg["beta_end"])))
        if kind == "cosine":
            return cls(cosine_betas(steps, float(cfg.get("cosine_offset", 0.008))))
        raise UserError(f"model.diffusion.beta_schedule={kind!r}; use one of {', '.join(BETA_SCHEDULES)}")

    # ------------------------------------------------------------------------------------ lookups
    def alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        """ᾱ_t in float64 for t ≥ 0, and 1 for t = −1 (no noise)."""
        t = torch.as_tensor(t, dtype=torch.long)
        if bool((t < -1).any()) or bool((t >= self.num_timesteps).any()):
            raise ValueError(f"timestep out of range [-1, {self.num_timesteps - 1}]")
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return padded[(t + 1).cpu()]

    # ------------------------------------------------------------------------------------ forward process
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """A draw from q(x_t | x_0) given the standard normal `noise`."""
        a = self.alpha_bar(t)
        return _broadcast(a.sqrt(), x0) * x0 + _broadcast((1 - a).sqrt(), x0) * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The v-prediction target √ᾱ_t·ε − √(1−ᾱ_t)·x_0."""
        a = self.alpha_bar(t)
        return _broadcast(a.sqrt(), x0) * noise - _broadcast((1 - a).sqrt(), x0) * x0

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int,
                        prediction_type: str) -> torch.Tensor:
        check_prediction_type(prediction_type)
        if prediction_type == "eps":
            return noise
        if prediction_type == "v":
            return self.velocity(x0, noise, t)
        return x0

    def split_prediction(self, x_t: torch.Tensor, output: torch.Tensor, t: torch.Tensor | int,
                         prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) implied by a denoiser output of the given type."""
        check_prediction_type(prediction_type)
        a = self.alpha_bar(t)
        sqrt_a, sqrt_1ma = _broadcast(a.sqrt(), x_t), _broadcast((1 - a).sqrt(), x_t)
        if prediction_type == "eps":
            return (x_t - sqrt_1ma * output) / sqrt_a, output
        if prediction_type == "v":
            return sqrt_a * x_t - sqrt_1ma * output, sqrt_1ma * x_t + sqrt_a * output
        return output, (x_t - sqrt_a * output) / sqrt_1ma

    # ------------------------------------------------------------------------------------ reverse process
    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the DDPM posterior q(x_{t−1} | x_t, x_0), in Ho et al.'s closed form."""
        a, a_prev = self.alpha_bar(t), self.alpha_bar(t - 1)
        beta = 1 - a / a_prev
        mean = (_broadcast(a_prev.sqrt() * beta / (1 - a), x0) * x0
                + _broadcast((1 - beta).sqrt() * (1 - a_prev) / (1 - a), x_t) * x_t)
        return mean, _broadcast(beta * (1 - a_prev) / (1 - a), x_t)

    def step_variance(self, t: int, t_prev: int, eta: float = 1.0) -> torch.Tensor:
        """σ² of the transition t → t_prev; η = 1 gives the ancestral (posterior) variance. float64 scalar."""
        a, a_prev = self.alpha_bar(t), self.alpha_bar(t_prev)
        return eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)

    def transition(self, x0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
                   eta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of p(x_{t_prev} | x_t) given the denoiser's (x̂_0, ε̂), t > t_prev ≥ −1."""
        if not t > t_prev >= -1:
            raise ValueError(f"transition needs t > t_prev ≥ -1, got {t} → {t_prev}")
        a_prev = self.alpha_bar(t_prev)
        variance = self.step_variance(t, t_prev, eta)
        direction = (1 - a_prev - variance).clamp(min=0).sqrt()
        mean = _broadcast(a_prev.sqrt(), x0) * x0 + _broadcast(direction, eps) * eps
        return mean, _broadcast(variance, x0)


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise UserError(f"model.diffusion.prediction_type={prediction_type!r}; use one of "
                        f"{', '.join(PREDICTION_TYPES)}")
