"""Forecasting models, built by registry name from `cfg.model` (see earthcast.models.base)."""

from __future__ import annotations

import importlib

from earthcast.models.base import MODELS, Forecaster

# Modules that register models on import; optional ones are skipped when their extra is not installed.
_MODEL_MODULES = ["baselines.persistence", "baselines.unet", "baselines.convlstm", "baselines.extrapolation",
                  "earthformer"]


def _import_models() -> None:
    for name in _MODEL_MODULES:
        try:
            importlib.import_module(f"earthcast.models.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"earthcast.models.{name}":
                raise


def build_model(cfg) -> Forecaster:
    """Build the forecaster named by cfg.name with the rest of cfg as its settings."""
    _import_models()
    return MODELS.get(str(cfg["name"]))(cfg)


__all__ = ["MODELS", "Forecaster", "build_model"]
