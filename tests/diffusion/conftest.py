"""The noise schedules every diffusion test runs on."""

from __future__ import annotations

import pytest

from earthcast.diffusion import NoiseSchedule


@pytest.fixture(params=["linear", "scaled_linear", "cosine"])
def schedule(request) -> NoiseSchedule:
    return NoiseSchedule.from_config({"beta_schedule": request.param, "num_timesteps": 100, "beta_start": 1e-4,
                                      "beta_end": 2e-2})
