"""Deterministic forecasting: loss, optimisation and evaluation around one forecaster (cfg.model).

The model sees and predicts the dataset's normalised scale; evaluators see physical units (SEVIR: VIL
0–255), so thresholds and published scales match.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from earthcast.data.base import metadata
from earthcast.lightning.losses import LOSSES
from earthcast.lightning.module import MODULES, EarthcastModule, ForecastTestStep
from earthcast.lightning.optim import build_optimizer
from earthcast.metrics import build_evaluator
from earthcast.models import build_model


@MODULES.register("forecast")
class ForecastModule(ForecastTestStep, EarthcastModule):
    """Trains and evaluates one deterministic forecaster (cfg.model) on cfg.dataset."""

    def __init__(self, config: dict | DictConfig):
        super().__init__(config)
        config = self.config
        self.model = build_model(config["model"])
        self.loss = LOSSES.get(config["loss"])  # an unknown name fails here, before any step
        self.monitor = config["monitor"]["metric"]
        self.val_evaluator = build_evaluator({**config["evaluator"], "reference": False})
        # a checkpoint's stored config may have no bootstrap block: its test scores then go without intervals
        self.test_evaluator = build_evaluator(config["evaluator"], bootstrap=config.get("bootstrap"))

    def forecast(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.model(batch["inputs"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        prediction = self.model(batch["inputs"])
        loss = self.check_finite(self.loss(prediction, batch["targets"], batch.get("mask")), "training loss")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["inputs"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        prediction = self.model(batch["inputs"])
        loss = self.loss(prediction, batch["targets"], batch.get("mask"))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["inputs"].shape[0])
        self.val_evaluator.update(self.units(prediction), self.units(batch["targets"]), meta=metadata(batch))

    def on_validation_epoch_end(self) -> None:
        scores = self.val_evaluator.compute()
        self.val_evaluator.reset()
        for key, value in scores.items():
            if "/" in key or value is None or not isinstance(value, (int, float)):
                continue
            # NaN monitor (no events at any threshold yet) must not crash checkpointing: log the worst value
            if key == self.monitor and math.isnan(value):
                value = -1.0 if self.config["monitor"]["mode"] == "max" else math.inf
            self.log(f"val/{key}", float(value), prog_bar=(key == self.monitor), sync_dist=False)

    def configure_optimizers(self):
        return build_optimizer(self.model, self.config["optim"], self.trainer.estimated_stepping_batches)
