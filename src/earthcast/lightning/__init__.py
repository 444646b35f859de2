"""Lightning: the modules that train and evaluate models, the trainer and its checkpoint I/O, the forecast
writer, optimisation, weight averaging, loggers.

    build_module(cfg, checkpoint)   the LightningModule named by cfg.module (forecast or a PreDiff stage)
    trained_module(cfg, ckpt, dm)   the same with its trained weights, for evaluation
    build_trainer(cfg, fit=...)     the Trainer of a command
"""

from __future__ import annotations

from earthcast.config import plain
from earthcast.errors import UserError
from earthcast.lightning import forecast, prediff  # noqa: F401 - register the modules
from earthcast.lightning.checkpoint import Checkpoint
from earthcast.lightning.module import MODULES, EarthcastModule
from earthcast.lightning.trainer import build_trainer


def build_module(cfg, checkpoint: Checkpoint | None = None) -> EarthcastModule:
    """The module cfg.module names, built from the run config; a module rebuilt from `checkpoint` takes what
    its config leaves to earlier runs from there. Its weights are loaded by the caller (or by Lightning)."""
    config = plain(cfg)
    return MODULES.get(str(config["module"])).from_config(config, checkpoint)


def trained_module(cfg, checkpoint: Checkpoint | None, datamodule) -> EarthcastModule:
    """The module as trained, for evaluation: weights (and the datamodule's state, e.g. ENSO normalisation)
    from `checkpoint`; only a model without parameters goes without one."""
    module = build_module(cfg, checkpoint)
    if checkpoint is not None:
        checkpoint.restore_datamodule(datamodule)
        checkpoint.load_weights(module)
    elif module.trainable:
        raise UserError(f"model={cfg.model.name} needs weights: pass ckpt_path=<run dir>/checkpoints/best.ckpt")
    return module


__all__ = ["MODULES", "Checkpoint", "EarthcastModule", "build_module", "build_trainer", "trained_module"]
