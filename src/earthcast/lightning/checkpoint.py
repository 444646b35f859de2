"""Checkpoint I/O: a checkpoint is read once per command, weights only, with one-line errors.

The CLI reads `ckpt_path=` before Hydra composes (the checkpoint's own overrides rebuild its run) and hands
the same `Checkpoint` to the command; `CheckpointReadOnce` gives it to Lightning too when it resumes from that
file. `RunOverrides` stores the overrides a run was composed with in every checkpoint it saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from earthcast import __version__
from earthcast.errors import UserError


@dataclass
class Checkpoint:
    path: Path
    content: dict

    @classmethod
    def read(cls, path: str | os.PathLike) -> Checkpoint:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}; pass ckpt_path=<run dir>/checkpoints/best.ckpt "
                            f"(or last.ckpt)")
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
            raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}); it is corrupt, truncated or "
                            f"not a checkpoint: re-copy it or pick another") from None
        if not isinstance(content, dict) or "state_dict" not in content:
            raise UserError(f"{path} is not a Lightning checkpoint (no state_dict); pick a checkpoints/*.ckpt file")
        return cls(path, content)

    @property
    def state_dict(self) -> dict:
        return self.content["state_dict"]

    @property
    def config(self) -> dict:
        """The whole run config the checkpoint's module was built from."""
        return (self.content.get("hyper_parameters") or {}).get("config") or {}

    @property
    def module(self) -> str | None:
        return self.config.get("module")

    @property
    def overrides(self) -> list[str]:
        """The command-line overrides the checkpoint's run was composed with (replayed to rebuild it)."""
        return list(self.content.get("earthcast", {}).get("overrides", []))

    def load_weights(self, module) -> None:
        try:
            module.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise UserError(f"checkpoint {self.path} does not fit model={module.config['model']['name']} as "
                            f"configured ({first}); drop the model overrides that differ from the training run"
                            ) from None

    def restore_datamodule(self, datamodule) -> None:
        """Datamodule state (e.g. ENSO normalisation statistics) saved by Lightning beside the weights."""
        state = self.content.get(type(datamodule).__qualname__)
        if state:
            datamodule.load_state_dict(state)


class CheckpointReadOnce(TorchCheckpointIO):
    """Lightning's checkpoint I/O, except that the checkpoint this command already read is not read again."""

    def __init__(self, checkpoint: Checkpoint | None):
        super().__init__()
        self.checkpoint = checkpoint

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if self.checkpoint is not None and Path(path).resolve() == self.checkpoint.path.resolve():
            return self.checkpoint.content
        return super().load_checkpoint(path, weights_only=weights_only)


class RunOverrides(Callback):
    """Stores the overrides that rebuild this run (and the earthcast version) in every checkpoint."""

    def __init__(self, overrides: list[str]):
        self.overrides = list(overrides)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["earthcast"] = {"overrides": list(self.overrides), "version": __version__}
