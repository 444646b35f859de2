"""Shape and tiny-overfit tests of the baseline models."""

import pytest
import torch

from earthcast.models import build_model


def test_persistence_repeats_last_frame():
    model = build_model({"name": "persistence", "in_len": 3, "out_len": 4})
    x = torch.rand(2, 3, 5, 6, 1)
    y = model(x)
    assert y.shape == (2, 4, 5, 6, 1)
    assert torch.equal(y[:, 2], x[:, -1])
    assert not list(model.parameters())


@pytest.mark.parametrize("height,width", [(16, 16), (18, 13)])
def test_unet_shapes_any_size(height, width):
    model = build_model({"name": "unet", "in_len": 4, "out_len": 3, "channels": 1, "base_units": 8, "depth": 2})
    y = model(torch.rand(2, 4, height, width, 1))
    assert y.shape == (2, 3, height, width, 1)


def test_unet_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model({"name": "unet", "in_len": 4, "out_len": 2, "channels": 1, "base_units": 8, "depth": 2})
    x, y = torch.rand(2, 4, 16, 16, 1), torch.rand(2, 2, 16, 16, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 10


@pytest.mark.parametrize("height,width", [(16, 16), (15, 10)])
def test_convlstm_shapes(height, width):
    model = build_model({"name": "convlstm", "in_len": 3, "out_len": 4, "channels": 1, "hidden": 6, "depth": 2})
    assert model(torch.rand(2, 3, height, width, 1)).shape == (2, 4, height, width, 1)


def test_convlstm_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model({"name": "convlstm", "in_len": 3, "out_len": 2, "channels": 1, "hidden": 8, "depth": 1})
    x, y = torch.rand(2, 3, 8, 8, 1), torch.rand(2, 2, 8, 8, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 5
