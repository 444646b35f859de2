"""The persistence baseline: the last observed frame, repeated."""

import torch

from earthcast.models import build_model


def test_persistence_repeats_last_frame():
    model = build_model({"name": "persistence", "in_len": 3, "out_len": 4})
    x = torch.rand(2, 3, 5, 6, 1)
    y = model(x)
    assert y.shape == (2, 4, 5, 6, 1)
    assert torch.equal(y[:, 2], x[:, -1])
    assert not list(model.parameters())
