"""What every earthcast LightningModule shares: the run config stored in checkpoints (as plain containers,
so they load with weights_only=True), the overrides that rebuild the run, and the way to physical units."""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from earthcast.registry import Registry

#: cfg.module → LightningModule class taking the whole run config
TASK_MODULES = Registry("task module")


class EarthcastTask(L.LightningModule):
    def __init__(self, config: dict | DictConfig):
        super().__init__()
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        self.save_hyperparameters({"config": config})
        self.config = config
        # set by the subcommand: where test/predict forecasts stream to, how to reach physical units,
        # and the command-line overrides that rebuild this run (stored in checkpoints)
        self.prediction_sink: Any = None
        self.to_physical_fn: Any = None
        self.run_overrides: list[str] = []
        self.test_results: dict | None = None

    def _to_physical(self, x):
        if self.to_physical_fn is not None:
            return self.to_physical_fn(x)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        return datamodule.to_physical(x) if datamodule is not None else x

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from earthcast import __version__

        checkpoint["earthcast"] = {"overrides": list(self.run_overrides), "version": __version__}

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())


def build_task(cfg) -> EarthcastTask:
    """The LightningModule named by cfg.module (default: deterministic forecasting)."""
    import importlib

    for name in ("forecast", "prediff"):  # modules that register task classes on import
        try:
            importlib.import_module(f"earthcast.tasks.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"earthcast.tasks.{name}":
                raise
    return TASK_MODULES.get(str(cfg.get("module", "forecast")))(cfg)
