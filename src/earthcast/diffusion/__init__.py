"""Diffusion machinery without weights: noise schedules, samplers, EMA, constraints and knowledge control.

Models (VAE, Earthformer-UNet, alignment network) live in earthcast.models.prediff; Lightning tasks in
earthcast.tasks.prediff. Everything here is pure math applied to whatever networks it is handed.
"""

from earthcast.diffusion.anticipation import AnticipationRegression
from earthcast.diffusion.constraints import CONSTRAINTS, AverageIntensity, Constraint, build_constraint
from earthcast.diffusion.knowledge import KnowledgeGuidance, KnowledgeSettings, project_members
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
    "KnowledgeGuidance",
    "KnowledgeSettings",
    "NoiseSchedule",
    "Sampler",
    "build_constraint",
    "build_sampler",
    "project_members",
]
