"""What evaluators take and give: checked config values, forecast tensors in the shapes they score, and
scores as JSON and tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from earthcast.errors import UserError


def json_ready(values: Mapping[str, Any]) -> dict[str, float | int | None]:
    """Tensors/numpy scalars → float; NaN and ±inf → None (JSON null), so metrics.json stays valid JSON."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and not value.is_floating_point():
            out[key] = int(value)  # sample counts stay integers
            continue
        number = float(value.item() if hasattr(value, "item") else value)
        out[key] = number if math.isfinite(number) else None
    return out


def score_frame(table: Mapping[str, Any]) -> pd.DataFrame:
    """Columns of tensors/lists → DataFrame of plain floats (NaN kept), sample counts as integers."""
    plain = {
        key: value.detach().cpu().to(torch.float64).numpy() if isinstance(value, torch.Tensor) else value
        for key, value in table.items()
    }
    frame = pd.DataFrame(plain)
    for key in frame.columns:
        if key in ("n_samples", "n_units") or key.endswith("/n_samples"):
            frame[key] = frame[key].astype("int64")
    return frame


def threshold_label(threshold: float) -> str:
    """16 → '16', 0.5 → '0.5': the suffix used in keys such as csi_16."""
    return str(int(threshold)) if float(threshold).is_integer() else f"{threshold:g}"


def drop_channel(tensor: torch.Tensor, name: str, spatial_ndim: int = 4) -> torch.Tensor:
    """B×T×H×W×1 → B×T×H×W (channels-last C=1 squeezed)."""
    if tensor.ndim == spatial_ndim + 1:
        if tensor.shape[-1] != 1:
            raise ValueError(f"{name} has {tensor.shape[-1]} channels; evaluators score one variable (C=1)")
        tensor = tensor[..., 0]
    if tensor.ndim != spatial_ndim:
        raise ValueError(f"{name} must be B×T×H×W[×1], got shape {tuple(tensor.shape)}")
    return tensor


def split_forecast(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (deterministic forecast B×T×H×W, members B×M×T×H×W or None) for a target B×T×H×W.

    An ensemble has one more dim than the target: B×M×T×H×W[×1]. A one-member ensemble is scored as a
    deterministic forecast (fair CRPS and spread need at least two members).
    """
    members = None
    if pred.ndim == 6:
        members = drop_channel(pred, "ensemble prediction", spatial_ndim=5)
    elif pred.ndim == 5 and tuple(pred.shape[2:]) == tuple(target.shape[1:]):
        members = pred
    else:
        pred = drop_channel(pred, "prediction")
    if members is not None:
        if members.shape[0] != target.shape[0] or members.shape[2:] != target.shape[1:]:
            raise ValueError(
                f"ensemble prediction {tuple(members.shape)} does not match target {tuple(target.shape)}"
            )
        if members.shape[1] == 1:
            return members[:, 0], None
        return members.mean(dim=1), members
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} does not match target {tuple(target.shape)}")
    return pred, None


def require_positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"evaluator.{key} must be a positive integer, got {value!r}")


def require_numbers(key: str, values: Any, *, allow_empty: bool = False) -> list[float]:
    """Validate a config list of numbers (thresholds, scales) and return it as floats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise UserError(f"evaluator.{key} must be a list of numbers, got {values!r}")
    numbers = list(values)
    if not numbers and not allow_empty:
        raise UserError(f"evaluator.{key} is empty; give at least one value")
    for value in numbers:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"evaluator.{key} must contain only numbers, got {value!r}")
    if len(set(numbers)) != len(numbers):
        raise UserError(f"evaluator.{key} has duplicates: {numbers}")
    return [float(value) for value in numbers]


def require_sizes(key: str, values: Any, *, minimum: int) -> list[int]:
    """Validate a config list of integer window sizes (pool sizes, FSS scales)."""
    numbers = require_numbers(key, values, allow_empty=True)
    sizes = [int(value) for value in numbers]
    if any(size != value or size < minimum for size, value in zip(sizes, numbers)):
        raise UserError(f"evaluator.{key} must be integers ≥ {minimum}, got {list(values)}")
    return sizes
