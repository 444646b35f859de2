"""What every earthcast LightningModule shares, and the test step of every module that forecasts.

A module is built from the whole run config (stored in its checkpoints as plain containers, so they load with
weights_only=True) and from nothing else: data units come from the datamodule the trainer runs it on,
forecasts leave through the step outputs (earthcast.lightning.writer), scores through `test_results()`.
"""

from __future__ import annotations

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from earthcast.data.base import PhysicalUnits, metadata
from earthcast.registry import Registry

#: cfg.module → LightningModule class taking the whole run config
MODULES = Registry("module")


class EarthcastModule(L.LightningModule):
    def __init__(self, config: dict | DictConfig):
        super().__init__()
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        self.save_hyperparameters({"config": config})
        self.config = config

    @classmethod
    def from_config(cls, config: dict, checkpoint=None) -> EarthcastModule:
        """The module for a run config; `checkpoint` (an earthcast.lightning.checkpoint.Checkpoint of this
        module, already read) supplies what the config leaves to earlier runs. Weights are not loaded here."""
        return cls(config)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    @property
    def units(self) -> PhysicalUnits:
        """Model scale → physical units of the data this module is running on."""
        return self.trainer.datamodule.units

    def check_finite(self, loss: torch.Tensor, what: str) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite {what} at step {self.global_step}; lower optim.lr")
        return loss

    def log_scalar(self, name: str, value, batch_size: int, prog_bar: bool = False) -> None:
        """One value per step; validation values are averaged over ranks."""
        self.log(name, value, prog_bar=prog_bar, sync_dist=name.startswith("val/"), batch_size=batch_size)

    def test_results(self) -> dict:
        """{"scores", "by_lead", "by_group"} of the test epoch just run (collective under DDP)."""
        raise NotImplementedError


class ForecastTestStep:
    """The test and predict steps of a module whose `forecast(batch, batch_idx)` returns forecasts on the model
    scale (B×T×H×W×C, or B×M×T×H×W×C for an ensemble): scored by `test_evaluator` in physical units and
    returned for the forecast writer."""

    def forecast(self, batch: dict, batch_idx: int) -> torch.Tensor:
        raise NotImplementedError

    def _physical(self, batch: dict, batch_idx: int) -> dict:
        """Forecast, target (None for forecasts from fresh observations) and context in physical units."""
        units = self.units
        target = units(batch["targets"]) if batch.get("targets") is not None else None
        if target is not None and batch.get("mask") is not None:  # points left out (NaN, land) are missing
            target = torch.where(batch["mask"], target, torch.nan)
        return {"prediction": units(self.forecast(batch, batch_idx)), "target": target,
                "context": units(batch["inputs"]), "meta": metadata(batch)}

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        outputs = self._physical(batch, batch_idx)
        self.test_evaluator.update(outputs["prediction"], outputs["target"], context=outputs["context"],
                                   meta=outputs["meta"])
        return outputs

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return self._physical(batch, batch_idx)

    def test_results(self) -> dict:
        results = self.test_evaluator.results()
        self.test_evaluator.reset()
        return results
