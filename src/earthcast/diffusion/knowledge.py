"""Knowledge control at sampling time: soft guidance of the denoising chain and hard projection of members.

Soft (PreDiff, Gao et al. 2023, Alg. 2). An alignment network U_φ(z_t, t, y) estimates the constraint
statistic F of the final forecast from the noisy latent z_t and the context latents y. Each denoising
transition mean is shifted by
    μ ← μ − λ · Σ_t · ∇_{z_t} E(z_t),    E = Σ_k ((U_φ,k − F₀,k) / σ_k)²
computed for every sample separately: E is a per-sample energy and the gradient of their *sum* is, sample
by sample, the gradient of each one's own energy (U_φ has no batch coupling), so one member's target never
moves another member. Σ_t is the step's ancestral variance (see earthcast.diffusion.samplers), σ_k the
anticipation regression's residual spread, so E counts forecast standard deviations and λ (`scale`) does
not depend on the units of F. F₀ = τ + n·σ comes from the context (earthcast.diffusion.anticipation) or
is given as a value — never from the target.

Hard (in the spirit of ProbConserv, Hansen et al., ICML 2023). After decoding, each member is moved to the
nearest field — in the norm weighted by the ensemble's per-pixel variance — whose statistic equals F₀
exactly; pixels where the ensemble disagrees move most. The size of the move is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from earthcast.diffusion.constraints import Constraint
from earthcast.diffusion.pipeline import PreDiffPipeline
from earthcast.diffusion.samplers import Sampler
from earthcast.errors import UserError

MODES = ("none", "guide", "project", "guide+project")
TARGETS = ("regression", "value")


@dataclass(frozen=True)
class KnowledgeSettings:
    """The `knowledge:` config group (configs/knowledge/*.yaml)."""

    mode: str = "none"
    constraint: str | None = None
    scale: float = 1.0
    n_sigma: float = 0.0
    target: str = "regression"
    value: float | None = None
    #: projection weights = ensemble variance + floor·(mean variance): keeps zero-spread pixels movable
    variance_floor: float = 0.05

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> KnowledgeSettings:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__) - {"name"})
        if unknown:
            raise UserError(f"knowledge.{unknown[0]} is not a knowledge option; use "
                            f"{', '.join(cls.__dataclass_fields__)}")
        settings = cls(**{k: v for k, v in cfg.items() if k in cls.__dataclass_fields__})
        if settings.mode not in MODES:
            raise UserError(f"knowledge.mode={settings.mode!r}; use one of {', '.join(MODES)}")
        if settings.target not in TARGETS:
            raise UserError(f"knowledge.target={settings.target!r}; use one of {', '.join(TARGETS)}")
        if settings.target == "value" and settings.value is None:
            raise UserError("knowledge.target=value needs knowledge.value=<F₀ in physical units, e.g. VIL 0–255>")
        if settings.scale < 0:
            raise UserError(f"knowledge.scale={settings.scale}; it must be ≥ 0")
        return settings

    @property
    def guides(self) -> bool:
        return self.mode in ("guide", "guide+project")

    @property
    def projects(self) -> bool:
        return self.mode in ("project", "guide+project")


class KnowledgeGuidance:
    """The `guidance(z_t, t, Σ_t) → mean shift` callable of one batch (see the module docstring).

    predict(z_t, t) → B×K statistic estimates in the units of `target` (the alignment network, already
    bound to its context and unstandardised); target B×K is F₀; sigma (K,) the units of the energy.
    """

    def __init__(self, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], target: torch.Tensor,
                 sigma: torch.Tensor, scale: float):
        self.predict, self.scale = predict, float(scale)
        self.target, self.sigma = target, sigma
        self.energies: list[torch.Tensor] = []  # per step, per sample: how far the chain is from F₀

    def energy(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample energy (B,): squared distance of U_φ(z_t) from F₀ in units of σ."""
        estimate = self.predict(z_t, t)
        return (((estimate - self.target.to(estimate)) / self.sigma.to(estimate)) ** 2).sum(dim=1)

    def __call__(self, z_t: torch.Tensor, t: int, variance: torch.Tensor) -> torch.Tensor:
        t_batch = torch.full((z_t.shape[0],), int(t), dtype=torch.long, device=z_t.device)
        with torch.enable_grad():
            z = z_t.detach().requires_grad_(True)
            energy = self.energy(z, t_batch)
            # sum of per-sample energies: ∂/∂z_i of the sum is ∂E_i/∂z_i (no coupling across the batch)
            (grad,) = torch.autograd.grad(energy.sum(), z)
        self.energies.append(energy.detach())
        return -self.scale * variance * grad


def ensemble_variance(members: torch.Tensor, floor: float) -> torch.Tensor:
    """Per-pixel variance across members (B×M×… → B×1×…) plus `floor`·its mean, the projection weights."""
    if members.shape[1] < 2:
        return torch.ones_like(members[:, :1])
    variance = members.var(dim=1, keepdim=True)
    mean = variance.flatten(1).mean(dim=1).reshape(-1, *([1] * (variance.ndim - 1)))
    return variance + floor * mean + 1e-12


def project_members(constraint: Constraint, members: torch.Tensor, target: torch.Tensor,
                    variance_floor: float = 0.05) -> tuple[torch.Tensor, dict[str, float]]:
    """Members B×M×T×H×W×C moved so their statistic equals `target` (B×K); returns them and the move's size
    (mean absolute and RMS change, and the largest remaining violation), on the dataset scale."""
    weights = ensemble_variance(members, variance_floor).expand_as(members)
    projected = constraint.project(members, target, weights)
    change = projected - members
    flat = projected.flatten(0, 1)
    achieved = constraint.statistic(flat).reshape(*members.shape[:2], -1)
    violation = (achieved - target.unsqueeze(1).to(achieved)).abs().max()
    return projected, {"mean_abs_change": float(change.abs().mean()),
                       "rms_change": float(change.pow(2).mean().sqrt()),
                       "max_violation": float(violation)}


class KnowledgeControl:
    """Knowledge control of one alignment model (a prediff_align module: `constraint`, `anticipation`,
    `predict_statistic`) under `settings`, and `sample`, the one routine that draws an ensemble with it —
    plain sampling when the settings say none (the default)."""

    def __init__(self, settings: KnowledgeSettings | None = None, model=None):
        self.settings, self.model = settings or KnowledgeSettings(), model
        if not self.active:
            return
        if not hasattr(model, "align_net"):
            raise UserError(f"knowledge.mode={self.settings.mode} needs a prediff_align checkpoint (it holds the "
                            f"alignment network and the F₀ regression); use knowledge=none with an LDM checkpoint")
        if self.settings.constraint and self.settings.constraint != model.constraint.name:
            raise UserError(f"knowledge.constraint={self.settings.constraint} but the alignment checkpoint was "
                            f"trained for {model.constraint.name!r}; use knowledge={model.constraint.name}")

    @property
    def active(self) -> bool:
        return self.settings.mode != "none"

    def target(self, inputs: torch.Tensor, n_sigma: float, units=None) -> torch.Tensor:
        """F₀ (B×K, dataset scale) — from the context regression, or the configured value in physical `units` —
        clipped to the values the statistic can take (τ − 4σ of a dry scene would ask for a negative mean)."""
        model = self.model
        if self.settings.target == "value":
            k = model.anticipation.coef.shape[1]
            f0 = torch.full((inputs.shape[0], k), units.to_model(float(self.settings.value)), dtype=torch.float64,
                            device=inputs.device)
        else:
            f0 = model.anticipation.anticipate(model.constraint.context_features(inputs), n_sigma)
        bounds = model.constraint.statistic_range()
        return f0 if bounds is None else f0.clamp(*bounds)

    def guidance(self, f0: torch.Tensor, members: int):
        """`guidance(context_latents)` building the batch's KnowledgeGuidance, or None without guidance."""
        if not self.settings.guides or self.settings.scale == 0:
            return None
        model, target = self.model, f0.repeat_interleave(members, dim=0)

        def build(context_latents):
            return KnowledgeGuidance(lambda z, t: model.predict_statistic(z, t, context_latents), target,
                                     model.anticipation.residual_std, self.settings.scale)

        return build

    def project(self, members: torch.Tensor, f0: torch.Tensor):
        if not self.settings.projects:
            return members, None
        return project_members(self.model.constraint, members, f0, self.settings.variance_floor)

    def sample(self, pipeline: PreDiffPipeline, context: torch.Tensor, members: int, sampler: Sampler,
               out_len: int, *, seed: int, n_sigma: float = 0.0, units=None,
               on_step: Callable[[int, int], None] | None = None):
        """(members B×M×T×H×W×C on the dataset scale, F₀ or None, projection stats or None) for one batch; the
        initial noise comes from `seed` alone, so settings that differ only in F₀ start from the same noise."""
        f0 = self.target(context, n_sigma, units) if self.active else None
        generator = torch.Generator(device=context.device).manual_seed(seed)
        guidance = self.guidance(f0, members) if f0 is not None else None
        forecast, _ = pipeline.forecast(context, members, sampler, out_len, generator=generator, guidance=guidance,
                                        on_step=on_step)
        moved = None
        if f0 is not None:
            forecast, moved = self.project(forecast, f0)
        return forecast, f0, moved
