"""The UNet baseline: any frame size, and it learns."""

import pytest
import torch

from earthcast.models import build_model
from tests.conftest import fit_steps


@pytest.mark.parametrize("height,width", [(16, 16), (18, 13)])
def test_unet_shapes_any_size(height, width):
    model = build_model({"name": "unet", "in_len": 4, "out_len": 3, "channels": 1, "base_units": 8, "depth": 2})
    y = model(torch.rand(2, 4, height, width, 1))
    assert y.shape == (2, 3, height, width, 1)


def test_unet_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model({"name": "unet", "in_len": 4, "out_len": 2, "channels": 1, "base_units": 8, "depth": 2})
    x, y = torch.rand(2, 4, 16, 16, 1), torch.rand(2, 2, 16, 16, 1)
    first, last = fit_steps(model.parameters(), lambda: torch.nn.functional.mse_loss(model(x), y), 150, 3e-3)
    assert last < first / 10
