"""Knowledge control: F₀ from the context, per-sample guidance, monotone steering, and the hard projection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from earthcast.data.base import PhysicalUnits
from earthcast.diffusion import (
    AverageIntensity,
    DDIMSampler,
    DDPMSampler,
    KnowledgeControl,
    KnowledgeSettings,
    project_members,
)
from earthcast.errors import UserError
from earthcast.lightning.prediff import PreDiffAlignModule
from tests.conftest import align_config, prediff_batch

pytestmark = pytest.mark.usefixtures("one_thread")
VIL = PhysicalUnits(255.0)


def align_task() -> PreDiffAlignModule:
    torch.manual_seed(0)
    return PreDiffAlignModule(align_config()).eval()


def sample(control: KnowledgeControl, task, inputs, members, sampler, n_sigma):
    """An ensemble of 2 frames from noise seed 0, as `earthcast sample` draws one batch."""
    return control.sample(task.pipeline(), inputs, members, sampler, 2, seed=0, n_sigma=n_sigma, units=VIL)


def guide(mode: str = "guide", scale: float = 1.0) -> KnowledgeSettings:
    return KnowledgeSettings.from_config({"mode": mode, "constraint": "avg_intensity", "scale": scale})


# ----------------------------------------------------------------------------------- F₀ from the context
def test_f0_depends_on_the_context_only():
    task = align_task()
    task.anticipation.coef.copy_(torch.tensor([[0.1], [0.2], [0.0], [0.3], [0.0], [0.0]], dtype=torch.float64))
    runner = KnowledgeControl(guide(), task)
    data = prediff_batch(3)
    f0 = runner.target(data["inputs"], 0.0)  # the signature has no place for the target: no oracle
    assert f0.shape == (3, 1)
    features = task.constraint.context_features(data["inputs"])
    assert torch.allclose(f0, task.anticipation.expected(features)[0])
    # a mean intensity below zero cannot be asked for: F₀ stays within what the statistic can take
    assert torch.equal(runner.target(data["inputs"], -1e6), torch.zeros(3, 1, dtype=torch.float64))
    fixed = KnowledgeControl(KnowledgeSettings.from_config({"mode": "guide", "target": "value", "value": 51.0}), task)
    assert torch.allclose(fixed.target(data["inputs"], 3.0, VIL), torch.full((3, 1), 0.2, dtype=torch.float64))


# ----------------------------------------------------------------------------------- per-sample guidance
def test_guidance_gradient_of_one_sample_ignores_the_others():
    """The reference code took a norm over the whole batch, so each sample's target moved every sample."""
    task = align_task()
    runner = KnowledgeControl(guide(scale=50.0), task)
    context = task.encode(prediff_batch(3)["inputs"])
    z_t, variance = torch.randn(3, 2, 4, 4, 2), torch.tensor(0.01)
    f0 = torch.tensor([[0.1], [0.2], [0.3]], dtype=torch.float64)
    shift = runner.guidance(f0, members=1)(context)(z_t, 40, variance)
    moved_target = f0.clone()
    moved_target[2] = 0.9
    shift2 = runner.guidance(moved_target, members=1)(context)(z_t, 40, variance)
    assert shift.shape == z_t.shape and shift.abs().sum() > 0
    assert torch.equal(shift[:2], shift2[:2]) and not torch.allclose(shift[2], shift2[2])
    z_other = z_t.clone()
    z_other[1] += 1.0  # another sample's state does not leak either
    shift3 = runner.guidance(f0, members=1)(context)(z_other, 40, variance)
    assert torch.allclose(shift[[0, 2]], shift3[[0, 2]], atol=1e-7)


def test_guided_chain_of_one_member_ignores_the_targets_of_the_others():
    task = align_task()
    runner = KnowledgeControl(guide(scale=50.0), task)
    inputs = prediff_batch(2)["inputs"]
    sampler = DDPMSampler(task.schedule, steps=5)
    outputs = []
    for second in (0.0, 0.9):
        f0 = torch.tensor([[0.2], [second]], dtype=torch.float64)
        forecast, _ = task.pipeline().forecast(inputs, 2, sampler, 2, generator=torch.Generator().manual_seed(0),
                                               guidance=runner.guidance(f0, members=2))
        outputs.append(forecast)
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-6)  # both members of sample 0
    assert not torch.allclose(outputs[0][1], outputs[1][1])


# ----------------------------------------------------------------------------------- steering with n
class GaussianDenoiser(nn.Module):
    """The exact ε-predictor for latents distributed N(0, I): E[ε | z_t] = √(1 − ᾱ_t)·z_t."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, z_t, t, context):
        return (1 - self.schedule.alpha_bar(t)).sqrt().to(z_t).reshape(-1, 1, 1, 1, 1) * z_t


class ExactAlignment(nn.Module):
    """A perfect U_φ for the mean intensity: decode the denoiser's x̂_0 into the valid range, as the pipeline
    does, and average it (differentiable)."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def forward(self, z_t, t, context):
        task = self.task
        x0, _ = task.schedule.split_prediction(z_t, task.denoiser(z_t, t, context), t, "eps")
        return task.vae.decode(x0 / task.latent_scale).clamp(0, 1).flatten(1).mean(dim=1, keepdim=True)


def fixed_model() -> PreDiffAlignModule:
    """A fixed tiny PreDiff: seeded random VAE decoder, exact denoiser and exact alignment for N(0, I) latents."""
    task = align_task()
    task.denoiser = GaussianDenoiser(task.schedule)
    task.align_net = ExactAlignment(task)
    with torch.no_grad():
        task.vae.decoder.conv_out.bias.fill_(0.3)  # fields mostly inside [0, 1], where clamping leaves them be
    return task


def _guided_means(ns=(-2.0, 0.0, 2.0)) -> tuple[float, dict]:
    task = fixed_model()
    inputs = prediff_batch(2)["inputs"]
    sampler = DDIMSampler(task.schedule, steps=20, eta=0.0)
    plain, _, _ = sample(KnowledgeControl(), task, inputs, 8, sampler, 0.0)
    # τ = the unguided mean intensity, σ = a tenth of it: ±2σ is well inside what the model can produce
    tau = float(plain.mean())
    task.anticipation.coef.zero_()
    task.anticipation.coef[0, 0] = tau
    task.anticipation.residual_std.fill_(0.1 * tau)
    runner = KnowledgeControl(guide(scale=1.0), task)
    means = {}
    for n in ns:
        forecast, f0, moved = sample(runner, task, inputs, 8, sampler, n)
        assert moved is None and torch.allclose(f0, torch.full_like(f0, tau + n * 0.1 * tau))
        means[n] = forecast.mean(dim=(1, 2, 3, 4, 5))  # per sample
    return tau, means


def test_knowledge_control_moves_the_mean_intensity_monotonically_with_n():
    _, means = _guided_means()
    assert bool((means[-2.0] < means[0.0]).all() and (means[0.0] < means[2.0]).all())


@pytest.mark.xfail(strict=True, reason="λ is not scale-free yet (issue 18, knowledge control): whether λ = 1 "
                   "lands within σ/2 depends on the random decoder's gain, which changed with the reference VAE "
                   "initialisation (with it, λ = 1 undershoots at n = ±2)")
def test_knowledge_control_with_an_exact_alignment_lands_on_its_target():
    tau, means = _guided_means()
    # with an exact U_φ the ensemble lands on its target: within half a σ of F₀ for every n
    for n, mean in means.items():
        assert torch.allclose(mean.double(), torch.full_like(mean.double(), tau * (1 + 0.1 * n)), atol=0.05 * tau)


# ----------------------------------------------------------------------------------- the hard variant
def test_projection_meets_the_constraint_exactly_and_moves_uncertain_pixels_most():
    g = torch.Generator().manual_seed(0)
    members = 0.2 + 0.3 * torch.rand(2, 4, 2, 8, 8, 1, generator=g)
    members[:, :, :, :4] = 0.35  # the top half: all members agree (no spread)
    target = torch.tensor([[0.40], [0.30]], dtype=torch.float64)
    projected, report = project_members(AverageIntensity(), members, target)
    achieved = projected.flatten(2).mean(dim=2)
    assert torch.allclose(achieved, target.float().expand_as(achieved), atol=1e-6)
    assert report["max_violation"] < 1e-6 and report["mean_abs_change"] > 0
    assert bool((projected >= 0).all() and (projected <= 1).all())
    change = (projected - members).abs()
    assert change[:, :, :, :4].mean() < 0.2 * change[:, :, :, 4:].mean()
    # the smallest move in the variance-weighted norm: a uniform shift to the same mean costs more
    weights = members.var(dim=1, keepdim=True) + 0.05 * members.var(dim=1, keepdim=True).mean() + 1e-12
    uniform = members + (target.reshape(2, 1, 1, 1, 1, 1) - members.flatten(2).mean(2).reshape(2, 4, 1, 1, 1, 1))
    cost = lambda x: ((x - members) ** 2 / weights).sum()  # noqa: E731
    assert cost(projected) < cost(uniform.float())


def test_projection_per_frame_and_when_infeasible():
    members = torch.full((1, 3, 2, 4, 4, 1), 0.5)
    members[:, 1] = 0.7
    per_frame = AverageIntensity(per_frame=True)
    projected, report = project_members(per_frame, members, torch.tensor([[0.2, 0.6]], dtype=torch.float64))
    assert torch.allclose(projected[:, :, 0].mean(dim=(-3, -2, -1)), torch.tensor(0.2), atol=1e-6)
    assert torch.allclose(projected[:, :, 1].mean(dim=(-3, -2, -1)), torch.tensor(0.6), atol=1e-6)
    # a mean above the valid range cannot be met: members saturate and the gap is reported, not hidden
    projected, report = project_members(AverageIntensity(), members, torch.tensor([[1.5]], dtype=torch.float64))
    assert torch.equal(projected, torch.ones_like(members)) and report["max_violation"] == pytest.approx(0.5)


def test_project_mode_in_the_sampling_path_meets_f0():
    task = fixed_model()
    task.anticipation.coef.zero_()
    task.anticipation.coef[0, 0] = 0.25
    runner = KnowledgeControl(KnowledgeSettings.from_config({"mode": "project"}), task)
    forecast, f0, moved = sample(runner, task, prediff_batch(2)["inputs"], 3, DDIMSampler(task.schedule, 5), 0.0)
    assert torch.allclose(forecast.flatten(2).mean(2), torch.full((2, 3), 0.25), atol=1e-5)
    assert moved["max_violation"] < 1e-5 and moved["rms_change"] > 0


def test_knowledge_settings_and_runner_errors():
    with pytest.raises(UserError, match="knowledge.scal is not a knowledge option"):
        KnowledgeSettings.from_config({"scal": 1})
    with pytest.raises(UserError, match="knowledge.mode"):
        KnowledgeSettings.from_config({"mode": "steer"})
    with pytest.raises(UserError, match="knowledge.value"):
        KnowledgeSettings.from_config({"mode": "guide", "target": "value"})
    task = align_task()
    with pytest.raises(UserError, match="knowledge.constraint=energy"):
        KnowledgeControl(KnowledgeSettings.from_config({"mode": "guide", "constraint": "energy"}), task)
    with pytest.raises(UserError, match="needs a prediff_align checkpoint"):
        KnowledgeControl(guide(), model=object())
    assert not KnowledgeControl(KnowledgeSettings(), task).active
