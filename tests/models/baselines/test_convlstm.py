"""The ConvLSTM baseline: any frame size, and it learns."""

import pytest
import torch

from earthcast.models import build_model
from tests.conftest import fit_steps


@pytest.mark.parametrize("height,width", [(16, 16), (15, 10)])
def test_convlstm_shapes(height, width):
    model = build_model({"name": "convlstm", "in_len": 3, "out_len": 4, "channels": 1, "hidden": 6, "depth": 2})
    assert model(torch.rand(2, 3, height, width, 1)).shape == (2, 4, height, width, 1)


def test_convlstm_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model({"name": "convlstm", "in_len": 3, "out_len": 2, "channels": 1, "hidden": 8, "depth": 1})
    x, y = torch.rand(2, 3, 8, 8, 1), torch.rand(2, 2, 8, 8, 1)
    first, last = fit_steps(model.parameters(), lambda: torch.nn.functional.mse_loss(model(x), y), 200, 1e-2)
    assert last < first / 5
