"""The training losses (earthcast.lightning.losses): the balanced loss against values computed by hand."""

import numpy as np
import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.losses import LOSSES, balanced_weights


def scaled(vil):
    """VIL pixel values → the model's scale, as the SEVIR datamodule divides them."""
    return torch.from_numpy(np.asarray(vil, dtype=np.float32) / np.float32(255.0))


def test_weights_step_up_at_the_vil_thresholds():
    vil = [0, 73, 74, 132, 133, 180, 181, 218, 219, 255]
    assert balanced_weights(scaled(vil)).tolist() == [1, 1, 2, 2, 5, 5, 10, 10, 30, 30]


def test_balanced_mse_mae_by_hand():
    # every pixel off by 0.1: mean weight (1+1+2+2+5+5+10+10+30+30)/10 = 9.6 → 9.6·0.01 + 9.6·0.1 = 1.056
    target = scaled([0, 73, 74, 132, 133, 180, 181, 218, 219, 255])
    assert LOSSES.get("balanced_mse_mae")(target + 0.1, target).item() == pytest.approx(1.056, rel=1e-5)
    # two pixels: VIL 0 forecast 0.5 too high (w 1), VIL 219 forecast 0.2 too low (w 30)
    # mean(w·e²) = (0.25 + 30·0.04)/2 = 0.725, mean(w·|e|) = (0.5 + 30·0.2)/2 = 3.25
    target = scaled([0, 219])
    prediction = target + torch.tensor([0.5, -0.2])
    assert LOSSES.get("balanced_mse")(prediction, target).item() == pytest.approx(0.725, rel=1e-5)
    assert LOSSES.get("balanced_mse_mae")(prediction, target).item() == pytest.approx(3.975, rel=1e-5)


def test_balanced_loss_of_a_bf16_forecast_is_float32_and_has_gradients():
    target = scaled(np.full((2, 3, 4, 4, 1), 200))
    prediction = torch.zeros_like(target, dtype=torch.bfloat16, requires_grad=True)
    loss = LOSSES.get("balanced_mse_mae")(prediction, target)
    loss.backward()
    assert loss.dtype == torch.float32 and prediction.grad is not None
    # w = 10 everywhere, e = −200/255: 10·e² + 10·|e|
    e = 200 / 255
    assert loss.item() == pytest.approx(10 * e * e + 10 * e, rel=1e-5)


def test_unknown_loss_names_the_choices():
    with pytest.raises(UserError, match="balanced_mse_mae"):
        LOSSES.get("focal")
