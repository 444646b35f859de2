"""Checkpoint I/O: a checkpoint is read once per command, weights only, with one-line errors.

The CLI reads `ckpt_path=` before Hydra composes (the checkpoint's own overrides rebuild its run) and hands
the same `Checkpoint` to the command; `CheckpointReadOnce` gives it to Lightning too when it resumes from that
file. `RunOverrides` stores the overrides a run was composed with in every checkpoint it saves.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from earthcast import __version__
from earthcast.errors import UserError

log = logging.getLogger("earthcast")


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

    @property
    def converted_from(self) -> dict | None:
        """The published weight file an `earthcast convert` checkpoint was made from (name, sha256)."""
        return self.content.get("earthcast", {}).get("converted_from")

    def load_weights(self, module) -> None:
        try:
            module.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise UserError(f"checkpoint {self.path} does not fit model={module.config['model']['name']} as "
                            f"configured ({first}); drop the model overrides that differ from the training run"
                            ) from None

    def load_weights_that_fit(self, module, strict: bool = True) -> None:
        """Start from these weights with a fresh optimizer and schedule (`train init_from=`): every weight must fit
        when `strict`; otherwise those whose name and shape fit load and the rest are listed in one line."""
        source, ours = self.state_dict, module.state_dict()
        fits = {k: v for k, v in source.items() if k in ours and ours[k].shape == v.shape}
        misfits = [f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in source.items()
                   if k in ours and ours[k].shape != v.shape]
        missing = [k for k in ours if k not in source]
        unexpected = [k for k in source if k not in ours]
        problems = [f"{label} {len(keys)} ({', '.join(keys[:3])}{' …' if len(keys) > 3 else ''})"
                    for label, keys in (("shape mismatch", misfits), ("not in checkpoint", missing),
                                        ("not in model", unexpected)) if keys]
        if problems and strict:
            raise UserError(f"init_from={self.path} does not fit model={module.config['model']['name']}: "
                            f"{'; '.join(problems)}; set init_strict=false to load only the weights that fit")
        module.load_state_dict(fits, strict=False)
        log.info("init_from=%s: %d of %d weights loaded%s", self.path, len(fits), len(ours),
                 f"; left at their initialisation: {'; '.join(problems)}" if problems else "")

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


def load_model(ckpt_path: str | os.PathLike):
    """The forecaster stored in an earthcast checkpoint (trained, or made by `earthcast convert`) as a plain
    `torch.nn.Module`, in eval mode, float32, on the CPU. Its forward takes (B, T_in, H, W, C) on the dataset's
    model scale (SEVIR: VIL/255; ICAR-ENSO: SST anomalies min/max-scaled to [0, 1]) and returns
    (B, T_out, H, W, C) on the same scale.

        >>> model = earthcast.load_model("earthformer_sevir.ckpt")
        >>> forecast = model(context)            # torch.no_grad() for inference
    """
    from earthcast.models import build_model

    checkpoint = Checkpoint.read(ckpt_path)
    config = checkpoint.config
    if "model" not in config:
        raise UserError(f"{ckpt_path} carries no run config; it was not written by earthcast")
    if config.get("module", "forecast") != "forecast":
        raise UserError(f"{ckpt_path} is a {config['module']} checkpoint, not a forecaster; load_model takes "
                        f"checkpoints of deterministic forecasters (module=forecast)")
    model = build_model(config["model"])
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in checkpoint.state_dict.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        keys = ", ".join((missing or unexpected)[:3])
        raise UserError(f"{ckpt_path}: the weights do not fit model={config['model'].get('name')} as stored "
                        f"({'missing' if missing else 'unexpected'}: {keys}); the checkpoint is damaged")
    return model.float().eval()
