"""Diffusion machinery without weights: noise schedules, samplers, constraints, knowledge control, and the
pipeline that draws ensembles from a VAE and a latent denoiser (`KnowledgeControl.sample`).

Networks (VAE, Earthformer-UNet, alignment network) live in earthcast.models.prediff; their training in
earthcast.lightning.prediff. Everything here is math applied to whatever networks it is handed.
"""

from earthcast.diffusion.anticipation import AnticipationRegression
from earthcast.diffusion.constraints import CONSTRAINTS, AverageIntensity, Constraint, build_constraint
from earthcast.diffusion.knowledge import (
    KnowledgeControl,
    KnowledgeGuidance,
    KnowledgeSettings,
    project_members,
)
from earthcast.diffusion.pipeline import PreDiffPipeline
from earthcast.diffusion.samplers import SAMPLERS, DDIMSampler, DDPMSampler, Sampler, build_sampler
from earthcast.diffusion.schedulers import NoiseSchedule

__all__ = [
    "CONSTRAINTS",
    "SAMPLERS",
    "AnticipationRegression",
    "AverageIntensity",
    "Constraint",
    "DDIMSampler",
    "DDPMSampler",
    "KnowledgeControl",
    "KnowledgeGuidance",
    "KnowledgeSettings",
    "NoiseSchedule",
    "PreDiffPipeline",
    "Sampler",
    "build_constraint",
    "build_sampler",
    "project_members",
]
