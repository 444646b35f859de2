"""Training losses of the forecast module, by name: `loss=<name>` on the model's (normalised) scale. Each takes
an optional `mask` (True where a target point counts, e.g. dataset=gridded's NaN and land points left out): the
mean then runs over the masked-in points alone.

mse, mae, mse+mae  the plain pixel losses (and their sum)
balanced_mse       B-MSE alone (below)
balanced_mse_mae   B-MSE + B-MAE of Shi et al. (2017), "Deep learning for precipitation nowcasting: a
                   benchmark and a new model" (NeurIPS), on SEVIR VIL: every pixel's squared and absolute
                   errors are weighted by the intensity of its target,

                       w(y) = 1, 2, 5, 10, 30   for VIL y < 74, < 133, < 181, < 219, ≥ 219   (VIL 0–255),

                   then averaged over all pixels: mean(w·e²) + mean(w·|e|). Plain MSE is minimised by the
                   conditional mean, which for an uncertain storm position is a wide, weak blob: intense cores
                   are rare pixels and blurring them away costs little. Weighting the rare intense pixels up
                   makes under-forecasting a core cost 10–30× more than a false alarm of the same size, so
                   the forecast keeps its peaks (frequency bias at the high thresholds nearer 1).

The weights and their order are Shi et al.'s; their break points (rain rates of 2, 5, 10, 30 mm/h) moved onto
the SEVIR VIL thresholds of the published scores (74, 133, 181, 219) are ours; the model's scale is VIL/255 (the SEVIR
datamodules' normalisation), so a target y on the model's scale is 255·y in VIL.
"""

from __future__ import annotations

import torch

from earthcast.registry import Registry

#: cfg.loss → loss(prediction, target), both on the model's scale
LOSSES = Registry("loss")

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


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


@LOSSES.register("mse")
def mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return masked_mean((prediction - target).square(), mask)


@LOSSES.register("mae")
def mae(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return masked_mean((prediction - target).abs(), mask)


@LOSSES.register("mse+mae")
def mse_mae(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return mse(prediction, target, mask) + mae(prediction, target, mask)


@LOSSES.register("balanced_mse_mae")
def balanced_mse_mae(prediction: torch.Tensor, target: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean(w·e²) + mean(w·|e|) with w = balanced_weights(target); computed in float32."""
    error = prediction.float() - target.float()
    weights = balanced_weights(target)
    return masked_mean(weights * error.square(), mask) + masked_mean(weights * error.abs(), mask)


@LOSSES.register("balanced_mse")
def balanced_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean(w·e²) with w = balanced_weights(target); computed in float32."""
    error = prediction.float() - target.float()
    return masked_mean(balanced_weights(target) * error.square(), mask)
