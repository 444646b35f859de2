"""Knowledge control at sampling time: soft guidance of the denoising chain and hard projection of members.

Soft (PreDiff, Gao et al., NeurIPS 2023, Sec. 3.2 and Alg. 2). The chain is steered so that a statistic F of
the forecast (e.g. its mean intensity) lands on F₀ = τ + n·σ, which comes from the context
(earthcast.diffusion.anticipation) or is given as a value — never from the target. Everything is computed per
sample: the gradient of a *sum* of per-sample terms is, sample by sample, each one's own gradient (no term
couples samples), so one member's target never moves another member. The energy E = Σ_k ((F̂_k − F₀,k)/σ_k)²
counts how far an estimate F̂ of F is from F₀ in forecast standard deviations σ (the regression's residuals).

`knowledge.estimator` says where F̂ comes from during the chain:
  decoded (default; ours)  F(D(x̂₀)): the statistic of the step's own prediction of the clean latent, decoded —
                           the plug-in of Tweedie's estimate x̂₀ = E[x₀ | z_t] (as in DPS, Chung et al., ICLR
                           2023, but without differentiating the denoiser: the gradient goes through the VAE
                           decoder only). Exact for a linear statistic and decoder, exact at the end of the
                           chain in any case; it reads no alignment network (the checkpoint still supplies F₀)
                           and cannot be steered into directions where a learned estimator errs on the model's
                           own samples. Costs a decoder pass and its gradient per step.
  alignment (the paper)    U_φ(z_t, t, y): the alignment network's estimate from the noisy latent and the context.

`knowledge.step` says how far each step moves:
  gauss_newton (default; ours)  The Gauss–Newton step d = −2E·∇E/‖∇E‖² (for one statistic −(F̂ − F₀)·∇F̂/‖∇F̂‖²,
      the smallest move that zeroes the linearised residual) corrects the step's prediction
          x̂₀ ← x̂₀ + λ·d           (decoded: ∇ with respect to x̂₀)
          x̂₀ ← x̂₀ + λ·√ᾱ_t·d      (alignment: ∇ with respect to z_t; ∂x̂₀/∂z_t = √ᾱ_t for unit-variance latents)
      and ε̂ is re-derived so that x_t = √ᾱ_t·x̂₀ + √(1−ᾱ_t)·ε̂ still holds — a correction of the score, so DDPM
      and DDIM with any η and number of steps are guided alike, the last transition (which returns x̂₀)
      included. The step is a ratio of gradients: its size does not depend on the number of latent elements,
      the units of F or how steeply the estimate responds. λ (`scale`) is the fraction of the gap that each
      step's prediction closes; with λ = 1 the step is the score of p(F(x₀) = F₀ | z_t) for an isotropic
      Gaussian posterior (classifier guidance towards the hard constraint) and the chain ends on F₀
      (tests/diffusion/test_knowledge_gaussian.py: Gaussians with closed-form scores, DDPM-1000 and DDIM-50).
      A trust region bounds one correction's RMS over a sample by `max_shift` latent standard deviations (the
      latents have unit variance), so a flat estimate (∇ → 0, step → ∞) cannot throw the chain off the data.
      It is stated in the data's units rather than in the step's noise √Σ_t, which is 0 on the last
      transition — the one that carries DDIM's final correction.
  paper  PreDiff's Alg. 2 as written, μ ← μ − λ·Σ_t·∇_{z_t}‖U_φ(z_t, t, y) − F₀‖ (the statistic on the dataset
      scale; Σ_t the step's ancestral variance, which DDIM borrows since its own is 0 at η = 0). Its pull per
      step scales with ‖∇U_φ‖ — with the latent size and the units of F — so a λ tuned at one scale does not
      carry to another (the published code's guide_scale is 50, with σ_t for Σ_t and one norm over the batch).
      Reads the alignment network.

Both stop with a one-line error when the energy diverges: a non-finite estimate, or for some sample a final
energy DIVERGED times its first (and above DIVERGED, a 10σ miss).

Hard (in the spirit of ProbConserv, Hansen et al., ICML 2023). After decoding, each member is moved to the
nearest field — in the norm weighted by the ensemble's per-pixel variance — whose statistic equals F₀
exactly; pixels where the ensemble disagrees move most. The size of the move is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import sqrt

import torch

from earthcast.diffusion.constraints import Constraint
from earthcast.diffusion.pipeline import PreDiffPipeline
from earthcast.diffusion.samplers import Sampler
from earthcast.errors import UserError

MODES = ("none", "guide", "project", "guide+project")
TARGETS = ("regression", "value")
STEPS = ("gauss_newton", "paper")
ESTIMATORS = ("alignment", "decoded")
#: a sample whose final energy exceeds this × max(its first energy, 1) has diverged (σ² units: a 10σ miss)
DIVERGED = 100.0


@dataclass(frozen=True)
class KnowledgeSettings:
    """The `knowledge:` config group (configs/knowledge/*.yaml)."""

    mode: str = "none"
    constraint: str | None = None
    scale: float = 1.0
    step: str = "gauss_newton"
    estimator: str = "decoded"
    #: trust region of a Gauss–Newton step: RMS correction of x̂₀ ≤ max_shift (latent standard deviations)
    max_shift: float = 4.0
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
        if settings.step not in STEPS:
            raise UserError(f"knowledge.step={settings.step!r}; use one of {', '.join(STEPS)}")
        if settings.estimator not in ESTIMATORS:
            raise UserError(f"knowledge.estimator={settings.estimator!r}; use one of {', '.join(ESTIMATORS)}")
        if settings.estimator == "decoded" and settings.step != "gauss_newton":
            raise UserError("knowledge.step=paper reads the alignment network; add knowledge.estimator=alignment "
                            "(knowledge.estimator=decoded takes knowledge.step=gauss_newton)")
        if settings.scale < 0:
            raise UserError(f"knowledge.scale={settings.scale}; it must be ≥ 0")
        if not settings.max_shift > 0:
            raise UserError(f"knowledge.max_shift={settings.max_shift}; it must be > 0 (latent standard "
                            f"deviations; 4 is the default)")
        return settings

    @property
    def guides(self) -> bool:
        return self.mode in ("guide", "guide+project")

    @property
    def projects(self) -> bool:
        return self.mode in ("project", "guide+project")


class KnowledgeGuidance:
    """The guidance of one batch (the samplers' `Guidance`; see the module docstring).

    predict(z, t) → B×K statistic estimates in the units of `target`, read from the noisy latent z = z_t
    (`reads="noisy"`: the alignment network, bound to its context and unstandardised) or from the step's
    prediction z = x̂₀ (`reads="clean"`: the decoded statistic); target B×K is F₀; sigma (K,) the units of the
    energy. Per step it records each sample's energy and the size of the correction asked for.
    """

    def __init__(self, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], target: torch.Tensor,
                 sigma: torch.Tensor, scale: float, step: str = "gauss_newton", max_shift: float = 4.0,
                 reads: str = "noisy"):
        self.predict, self.scale, self.step, self.max_shift = predict, float(scale), step, float(max_shift)
        self.reads = reads
        self.target, self.sigma = target, sigma
        self.energies: list[torch.Tensor] = []  # per step, per sample: how far the chain is from F₀ (σ² units)
        self.corrections: list[torch.Tensor] = []  # per Gauss–Newton step, per sample: RMS asked for

    def energy(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample energy (B,): squared distance of U_φ(z_t) from F₀ in units of σ."""
        return self._terms(z_t, t)[0]

    def _terms(self, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy, distance ‖U_φ − F₀‖ in the statistic's units), both (B,)."""
        residual = self.predict(z_t, t)
        residual = residual - self.target.to(residual)
        return ((residual / self.sigma.to(residual)) ** 2).sum(dim=1), residual.pow(2).sum(dim=1).sqrt()

    def _gradient(self, z_t: torch.Tensor, t: int, of: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy (B,), ∇_{z_t} of the per-sample `of` term): the sum's gradient is each sample's own."""
        t_batch = torch.full((z_t.shape[0],), int(t), dtype=torch.long, device=z_t.device)
        with torch.enable_grad():
            z = z_t.detach().requires_grad_(True)
            energy, distance = self._terms(z, t_batch)
            term = energy if of == "energy" else distance
            if not bool(torch.isfinite(term).all()):
                raise UserError(f"knowledge control diverged: the alignment network's estimate is not finite at "
                                f"diffusion step t={t}; lower knowledge.scale (now {self.scale:g})")
            (grad,) = torch.autograd.grad(term.sum(), z)
        self.energies.append(energy.detach())
        return energy.detach(), grad

    def prediction(self, x_t: torch.Tensor, t: int, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor | None:
        """x̂₀ moved by λ·√ᾱ_t times the Gauss–Newton step (within the trust region); None for step=paper."""
        if self.step != "gauss_newton":
            return None
        energy, grad = self._gradient(x_t if self.reads == "noisy" else x0, t, "energy")
        norm2 = grad.flatten(1).pow(2).sum(dim=1).to(torch.float64)
        # −2E/‖∇E‖² along ∇E zeroes the linearised energy; a flat U_φ (∇E = 0) gives no step, not a division by 0
        length = torch.where(norm2 > 0, -2 * energy / norm2.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
        gain = sqrt(float(alpha_bar)) if self.reads == "noisy" else 1.0  # a step in z_t moves x̂₀ by √ᾱ_t of it
        correction = grad * (self.scale * gain * length).to(grad).reshape(-1, *[1] * (grad.ndim - 1))
        rms = correction.flatten(1).pow(2).mean(dim=1).sqrt()
        self.corrections.append(rms.detach())
        shrink = (self.max_shift / rms.clamp(min=torch.finfo(rms.dtype).tiny)).clamp(max=1.0)
        return x0 + correction * shrink.reshape(-1, *[1] * (grad.ndim - 1))

    def mean_shift(self, x_t: torch.Tensor, t: int, variance: torch.Tensor) -> torch.Tensor | None:
        """−λ·Σ_t·∇‖U_φ − F₀‖ for step=paper; None for step=gauss_newton."""
        if self.step != "paper":
            return None
        _, grad = self._gradient(x_t, t, "distance")
        return -self.scale * variance * grad

    def check(self) -> None:
        """Raise when some sample's energy grew by DIVERGED over the chain (see the module docstring)."""
        if not self.energies:
            return
        first, last = self.energies[0], self.energies[-1]
        grew = last > DIVERGED * first.clamp(min=1.0)
        if bool(grew.any()):
            i = int(grew.nonzero()[0])
            raise UserError(f"knowledge control diverged: the energy ((U_φ − F₀)/σ)² of sample {i} grew from "
                            f"{float(first[i]):.3g} to {float(last[i]):.3g} over the chain; lower knowledge.scale "
                            f"(now {self.scale:g}; with knowledge.step=gauss_newton, 1 closes the gap)")

    def report(self) -> dict[str, float]:
        """The chain's final energy (mean over samples, σ² units); for Gauss–Newton steps the largest correction
        asked for (RMS, latent standard deviations) and the fraction of steps the trust region shortened."""
        summary = {"final_energy": float(self.energies[-1].mean()) if self.energies else float("nan")}
        if self.corrections:
            corrections = torch.stack(self.corrections)
            summary["largest_correction"] = float(corrections.max())
            summary["capped_fraction"] = float((corrections > self.max_shift).double().mean())
        return summary


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
        #: the guidance of the latest guided `sample` call (its energies and report), else None
        self.last_guidance: KnowledgeGuidance | None = None
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

    def guidance(self, f0: torch.Tensor, members: int, pipeline: PreDiffPipeline | None = None):
        """`guidance(context_latents)` building the batch's KnowledgeGuidance, or None without guidance;
        `pipeline` decodes for estimator=decoded."""
        if not self.settings.guides or self.settings.scale == 0:
            return None
        model, target, settings = self.model, f0.repeat_interleave(members, dim=0), self.settings

        def build(context_latents):
            if settings.estimator == "decoded":
                predict, reads = (lambda x0, t: model.constraint.statistic(pipeline.decode_frames(x0))), "clean"
            else:
                predict, reads = (lambda z, t: model.predict_statistic(z, t, context_latents)), "noisy"
            self.last_guidance = KnowledgeGuidance(predict, target, model.anticipation.residual_std, settings.scale,
                                                   settings.step, settings.max_shift, reads)
            return self.last_guidance

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
        guidance = self.guidance(f0, members, pipeline) if f0 is not None else None
        self.last_guidance = None
        forecast, _ = pipeline.forecast(context, members, sampler, out_len, generator=generator, guidance=guidance,
                                        on_step=on_step)
        if self.last_guidance is not None:
            self.last_guidance.check()
        moved = None
        if f0 is not None:
            forecast, moved = self.project(forecast, f0)
        return forecast, f0, moved
