"""The Lightning module for deterministic forecasting: loss, optimisation and evaluation around a Forecaster.

The model sees and predicts the dataset's normalised scale; evaluators see physical units through the
datamodule's `to_physical` (SEVIR: VIL 0–255), so thresholds and published scales match.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from earthcast.errors import UserError
from earthcast.losses import LOSSES
from earthcast.metrics import build_evaluator
from earthcast.models import build_model
from earthcast.tasks.base import TASK_MODULES, EarthcastTask
from earthcast.tasks.optim import build_optimizer

TENSOR_KEYS = ("inputs", "targets")


def forecast_loss(name: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name in LOSSES:  # earthcast.losses: balanced_mse_mae, balanced_mse
        return LOSSES[name](prediction, target)
    if name == "mse":
        return F.mse_loss(prediction, target)
    if name == "mae":
        return F.l1_loss(prediction, target)
    if name == "mse+mae":
        return F.mse_loss(prediction, target) + F.l1_loss(prediction, target)
    raise UserError(f"loss={name!r} is not supported; use mse, mae, mse+mae or {', '.join(LOSSES)}")


def batch_metadata(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in TENSOR_KEYS}


def evaluator_results(evaluator) -> dict:
    """Scores, per-lead and per-group tables of an evaluator. Each call syncs states across ranks, so every
    rank must make all three (they are collective under DDP)."""
    return {"scores": evaluator.compute(), "by_lead": evaluator.compute_by_lead(),
            "by_group": evaluator.compute_by_group()}


@TASK_MODULES.register("forecast")
class ForecastTask(EarthcastTask):
    """Trains and evaluates one deterministic forecaster (cfg.model) on cfg.dataset."""

    def __init__(self, config: dict | DictConfig):
        super().__init__(config)
        config = self.config
        self.model = build_model(config["model"])
        self.loss_name = config.get("loss", "mse")
        self.val_evaluator = build_evaluator({**config["evaluator"], "reference": False})
        self.test_evaluator = build_evaluator(config["evaluator"])

    # -- helpers ---------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    # -- training --------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        prediction = self.model(batch["inputs"])
        loss = forecast_loss(self.loss_name, prediction, batch["targets"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {self.global_step}; lower optim.lr")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["inputs"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        prediction = self.model(batch["inputs"])
        loss = forecast_loss(self.loss_name, prediction, batch["targets"])
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["inputs"].shape[0])
        self.val_evaluator.update(
            self._to_physical(prediction), self._to_physical(batch["targets"]), meta=batch_metadata(batch)
        )

    def on_validation_epoch_end(self) -> None:
        scores = self.val_evaluator.compute()
        self.val_evaluator.reset()
        monitor = self.config["evaluator"].get("monitor")
        for key, value in scores.items():
            if "/" in key or value is None or not isinstance(value, (int, float)):
                continue
            # NaN monitor (no events at any threshold yet) must not crash checkpointing: log -inf-like floor
            if key == monitor and math.isnan(value):
                value = -1.0
            self.log(f"val/{key}", float(value), prog_bar=(key == monitor), sync_dist=False)

    # -- test / predict --------------------------------------------------------------------------
    def test_step(self, batch: dict, batch_idx: int) -> None:
        prediction = self.model(batch["inputs"])
        physical_prediction = self._to_physical(prediction)
        physical_target = self._to_physical(batch["targets"])
        physical_context = self._to_physical(batch["inputs"])
        self.test_evaluator.update(physical_prediction, physical_target, context=physical_context,
                                   meta=batch_metadata(batch))
        if self.prediction_sink is not None:
            self.prediction_sink.write(physical_prediction, physical_target, physical_context, batch_metadata(batch))

    def on_test_epoch_end(self) -> None:
        # computed here, on every rank, while the process group is alive (the evaluator syncs its states)
        self.test_results = evaluator_results(self.test_evaluator)
        self.test_evaluator.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        prediction = self.model(batch["inputs"])
        if self.prediction_sink is not None:
            self.prediction_sink.write(self._to_physical(prediction), self._to_physical(batch["targets"]),
                                       self._to_physical(batch["inputs"]), batch_metadata(batch))

    def configure_optimizers(self):
        return build_optimizer(self.model, self.config["optim"], self.trainer.estimated_stepping_batches)
