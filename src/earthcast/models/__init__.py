"""Forecasting models, built by registry name from `cfg.model` (see earthcast.models.base)."""

from __future__ import annotations

import importlib

from earthcast.config import plain
from earthcast.errors import UserError
from earthcast.models.base import MODELS, Forecaster, configured

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
    """Build the forecaster named by cfg.name (or the Forecaster subclass cfg._target_ names) with the rest of
    cfg as its settings."""
    _import_models()
    options = plain(cfg)
    factory = MODELS.build_from(options)
    if options.pop("_target_", None):
        if not (isinstance(factory, type) and issubclass(factory, Forecaster)):
            raise UserError(f"model._target_ names {factory!r}, not a subclass of earthcast.models.Forecaster; "
                            f"subclass it (forward: B×T_in×H×W×C → B×T_out×H×W×C)")
        factory = configured(factory)
    return factory(options)


__all__ = ["MODELS", "Forecaster", "build_model"]
