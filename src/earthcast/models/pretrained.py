"""`earthcast.load_model`: the forecaster of an earthcast checkpoint as a plain PyTorch module."""

from __future__ import annotations

import os

from torch import nn

from earthcast.errors import UserError
from earthcast.models import build_model


def load_model(ckpt_path: str | os.PathLike) -> nn.Module:
    """The forecaster stored in an earthcast checkpoint (trained, or made by `earthcast convert`), in eval
    mode, float32, on the CPU. Its forward takes (B, T_in, H, W, C) on the dataset's model scale (SEVIR: VIL/255;
    ICAR-ENSO: SST anomalies min/max-scaled to [0, 1]) and returns (B, T_out, H, W, C) on the same scale.

        >>> model = earthcast.load_model("earthformer_sevir.ckpt")
        >>> forecast = model(context)            # torch.no_grad() for inference
    """
    from earthcast.tasks.runtime import load_checkpoint

    checkpoint = load_checkpoint(ckpt_path)
    config = (checkpoint.get("hyper_parameters") or {}).get("config") or {}
    if "model" not in config:
        raise UserError(f"{ckpt_path} carries no run config; it was not written by earthcast")
    if config.get("module", "forecast") != "forecast":
        raise UserError(f"{ckpt_path} is a {config['module']} checkpoint, not a forecaster; load_model takes "
                        f"checkpoints of deterministic forecasters (module=forecast)")
    model = build_model(config["model"])
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        keys = ", ".join((missing or unexpected)[:3])
        raise UserError(f"{ckpt_path}: the weights do not fit model={config['model'].get('name')} as stored "
                        f"({'missing' if missing else 'unexpected'}: {keys}); the checkpoint is damaged")
    return model.float().eval()
