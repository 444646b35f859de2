"""The anticipation regression that gives F₀ = τ + n·σ from the context."""

from __future__ import annotations

import pytest
import torch

from earthcast.diffusion import AnticipationRegression


def test_anticipation_regression_recovers_a_linear_law_and_its_spread():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(4000, 2, generator=g, dtype=torch.float64)
    targets = 2 + 3 * features[:, :1] - features[:, 1:] + 0.1 * torch.randn(4000, 1, generator=g, dtype=torch.float64)
    regression = AnticipationRegression(2, 1, ridge=0.0)
    for part in range(4):  # streamed in batches, as over a training split
        regression.update(features[part::4], targets[part::4])
    regression.fit()
    assert torch.allclose(regression.coef[:, 0], torch.tensor([2.0, 3.0, -1.0], dtype=torch.float64), atol=0.02)
    assert regression.residual_std.item() == pytest.approx(0.1, rel=0.05)
    tau, sigma = regression.expected(features[:3])
    assert torch.allclose(regression.anticipate(features[:3], 2.0), tau + 2 * sigma)
    assert torch.allclose(regression.unstandardize(regression.standardize(targets[:5])), targets[:5])
