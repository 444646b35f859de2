"""Checkpoint I/O: a checkpoint is read once per command, weights only, with one-line errors.

The CLI reads `ckpt_path=` before Hydra composes (the checkpoint's own overrides rebuild its run) and hands
the same `Checkpoint` to the command; `CheckpointReadOnce` gives it to Lightning too when it resumes from that
file, and saves atomically. `RunRecord` stores the overrides a run was composed with in every checkpoint it
saves, with what an exact resume needs.
"""

from __future__ import annotations

import io
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from earthcast import __version__
from earthcast.errors import UserError
from earthcast.io import AtomicFile
from earthcast.rundir import describe_os_error

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
        """The published weight file(s) an `earthcast convert` checkpoint was made from: {file, sha256}, or for
        PreDiff one such entry per network ({vae: ..., denoiser: ..., align: ...})."""
        return self.content.get("earthcast", {}).get("converted_from")

    def load_weights(self, module) -> None:
        problems = _mismatches(self.state_dict, module.state_dict())
        if problems:
            raise UserError(f"checkpoint {self.path} does not fit model={module.config['model']['name']} as "
                            f"configured ({'; '.join(problems)}); drop the model overrides that differ from the "
                            f"training run")
        module.load_state_dict(self.state_dict, strict=True)

    def load_weights_that_fit(self, module, strict: bool = True) -> None:
        """Start from these weights with a fresh optimizer and schedule (`train init_from=`): every weight must fit
        when `strict`; otherwise those whose name and shape fit load and the rest are listed in one line."""
        source, ours = self.state_dict, module.state_dict()
        fits = {k: v for k, v in source.items() if k in ours and ours[k].shape == v.shape}
        problems = _mismatches(source, ours)
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


def _mismatches(source: dict, ours: dict) -> list[str]:
    """What keeps `source` weights from loading into a module with state dict `ours`, the first keys named."""
    misfits = [f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in source.items()
               if k in ours and ours[k].shape != v.shape]
    missing = [k for k in ours if k not in source]
    unexpected = [k for k in source if k not in ours]
    return [f"{label} {len(keys)} ({', '.join(keys[:3])}{' …' if len(keys) > 3 else ''})"
            for label, keys in (("shape mismatch", misfits), ("not in checkpoint", missing),
                                ("not in model", unexpected)) if keys]


class CheckpointReadOnce(TorchCheckpointIO):
    """Lightning's checkpoint I/O, except that the checkpoint this command already read is not read again, and
    that a save is atomic in the destination directory and never fails silently."""

    def __init__(self, checkpoint: Checkpoint | None):
        super().__init__()
        self.checkpoint = checkpoint

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        """Serialised in memory, written under a temporary name beside `path`, flushed to disk, then renamed:
        an interrupted or failed save (disk full, quota, permissions) leaves the previous file whole. Staging
        it elsewhere (another filesystem's $TMPDIR) would make the final move a copy, which is not atomic.
        Any failure stops the run with one line."""
        if "://" in str(path):  # object storage: fsspec's transaction, as Lightning does it
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with AtomicFile(path, durable=True) as tmp, open(tmp, "wb") as handle:
                handle.write(buffer.getbuffer())
        except OSError as err:
            kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} exists"
            raise UserError(f"cannot save checkpoint {path} ({describe_os_error(err)}); training stopped and "
                            f"{kept}: free space or fix the permissions there, then resume") from None

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if self.checkpoint is not None and Path(path).resolve() == self.checkpoint.path.resolve():
            return self.checkpoint.content
        return super().load_checkpoint(path, weights_only=weights_only)


class RunRecord(Callback):
    """What every earthcast checkpoint carries beyond Lightning's own state, under "earthcast": the overrides that
    rebuild the run and the earthcast version; and, for an exact resume, the process's RNG states (restored when
    Lightning loads the checkpoint) and how many rows each CSV log held at the save (rows a killed run wrote
    after it are dropped when the resumed run opens the log: earthcast.lightning.loggers)."""

    def __init__(self, overrides: list[str]):
        self.overrides = list(overrides)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["earthcast"] = {"overrides": list(self.overrides), "version": __version__,
                                   "rng": rng_states(), "log_rows": csv_log_rows(trainer)}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get("earthcast", {}).get("rng")
        if states:
            set_rng_states(states)


def csv_log_rows(trainer) -> dict[str, int]:
    """{metrics file relative to the run directory: data rows}, after flushing what the CSV loggers buffer."""
    from earthcast.lightning.loggers import ContinuingCSVLogger

    rows = {}
    for logger in trainer.loggers:
        if isinstance(logger, ContinuingCSVLogger) and trainer.is_global_zero:
            logger.save()
            path = Path(logger.experiment.metrics_file_path)
            rows[os.path.relpath(path, trainer.default_root_dir)] = logger.experiment.data_rows()
    return rows


def rng_states() -> dict:
    """torch (and CUDA), numpy and Python RNG states, as types a weights_only load accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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
