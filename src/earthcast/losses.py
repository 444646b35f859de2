"""Training losses beyond plain MSE/MAE, selected by name with `loss=<name>` (see `forecast_loss`).

balanced_mse_mae   B-MSE + B-MAE of Shi et al. (2017), "Deep learning for precipitation nowcasting: a
                   benchmark and a new model" (NeurIPS), on SEVIR VIL: every pixel's squared and absolute
                   errors are weighted by the intensity of its target,

                       w(y) = 1, 2, 5, 10, 30   for VIL y < 74, < 133, < 181, < 219, ≥ 219   (VIL 0–255),

                   then averaged over all pixels: mean(w·e²) + mean(w·|e|). Plain MSE is minimised by the
                   conditional mean, which for an uncertain storm position is a wide, weak blob: intense cores
                   are rare pixels and blurring them away costs little. Weighting the rare intense pixels up
                   makes under-forecasting a core cost 10–30× more than a false alarm of the same size, so
                   the forecast keeps its peaks (frequency bias at the high thresholds nearer 1).

The weights' break points are Shi et al.'s rain-rate thresholds (2, 5, 10, 30 mm/h) moved onto the SEVIR
VIL thresholds of the published scores (74, 133, 181, 219); the model's scale is VIL/255 (the SEVIR
datamodules' normalisation), so a target y on the model's scale is 255·y in VIL.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: VIL (0–255) break points and the weight of each interval: w = WEIGHTS[i] for BREAKS[i-1] ≤ VIL < BREAKS[i]
BALANCED_VIL_BREAKS = (74.0, 133.0, 181.0, 219.0)
BALANCED_WEIGHTS = (1.0, 2.0, 5.0, 10.0, 30.0)
VIL_SCALE = 255.0


def balanced_weights(target: torch.Tensor, scale: float = VIL_SCALE) -> torch.Tensor:
    """Per-pixel weight of a target on the model's scale (VIL/`scale`), same shape, float32. The break points
    are divided by `scale` in float32 as the datamodule divides the data, so a pixel of VIL 74 gets weight 2."""
    target = target.detach().float()
    breaks = torch.tensor(BALANCED_VIL_BREAKS, dtype=torch.float32, device=target.device) / scale
    weights = torch.tensor(BALANCED_WEIGHTS, dtype=torch.float32, device=target.device)
    return weights[torch.bucketize(target, breaks, right=True)]


def balanced_mse_mae(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(w·e²) + mean(w·|e|) with w = balanced_weights(target); computed in float32."""
    error = prediction.float() - target.float()
    weights = balanced_weights(target)
    return (weights * error.square()).mean() + (weights * error.abs()).mean()


def balanced_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(w·e²) with w = balanced_weights(target); computed in float32."""
    error = prediction.float() - target.float()
    return (balanced_weights(target) * error.square()).mean()


#: name → loss(prediction, target) on the model's scale; `forecast_loss` looks names up here first
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "balanced_mse_mae": balanced_mse_mae,
    "balanced_mse": balanced_mse,
}
