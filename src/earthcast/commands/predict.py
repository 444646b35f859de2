"""write forecasts of a checkpoint to predictions.nc (of a split, or from fresh observations: inputs=<file>)

Every forecast of `split` (outputs.max_prediction_samples: null) in the stored-forecast schema of
docs/forecast_files.md, which `earthcast eval predictions=<file>` scores; with `inputs=<file>` the forecasts
from the last in_len frames of that file (earthcast.data.inputs), no targets needed: `earthcast eval
predictions=<file> observations=<file>` scores them once the observations exist.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig
from rich.console import Console

from earthcast.config import plain
from earthcast.data import DATASETS, build_datamodule
from earthcast.data.inputs import InputsDataModule
from earthcast.lightning import Checkpoint, build_trainer, trained_module
from earthcast.lightning.writer import ForecastWriter


def run(cfg: DictConfig, checkpoint: Checkpoint | None) -> Path | None:
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.inputs:
        # the training data are not read: the datamodule only gives units (the checkpoint's statistics)
        trained = DATASETS.build_from(plain(cfg.dataset))(plain(cfg.dataset), None)
        module = trained_module(cfg, checkpoint, trained)
        dims = list(cfg.inputs_dims) if cfg.inputs_dims else None
        datamodule = InputsDataModule(str(cfg.inputs), trained, plain(cfg.dataset), cfg.inputs_variable,
                                      cfg.inputs_time_dim, dims, int(cfg.dataset.eval_batch_size))
    else:
        datamodule = build_datamodule(cfg.dataset, split=str(cfg.split))
        module = trained_module(cfg, checkpoint, datamodule)
    writer = ForecastWriter.for_run(cfg, str(cfg.ckpt_path or ""))
    trainer = build_trainer(cfg, fit=False, callbacks=[writer])
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    if trainer.is_global_zero:
        Console().print(f"wrote forecasts to {writer.written}")
    return writer.written
