"""write forecasts of a checkpoint to predictions.nc

Every forecast of `split` (outputs.max_prediction_samples: null) in the stored-forecast schema of
docs/forecast_files.md, which `earthcast eval predictions=<file>` scores.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig
from rich.console import Console

from earthcast.data import build_datamodule
from earthcast.lightning import Checkpoint, build_trainer, trained_module
from earthcast.lightning.writer import ForecastWriter


def run(cfg: DictConfig, checkpoint: Checkpoint | None) -> Path | None:
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.dataset, split=str(cfg.split))
    module = trained_module(cfg, checkpoint, datamodule)
    writer = ForecastWriter.for_run(cfg, str(cfg.ckpt_path or ""))
    trainer = build_trainer(cfg, fit=False, callbacks=[writer])
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    if trainer.is_global_zero:
        Console().print(f"wrote forecasts to {writer.written}")
    return writer.written
