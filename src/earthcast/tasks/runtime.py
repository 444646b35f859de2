"""Shared plumbing of the subcommands: trainer construction, checkpoints, and run-directory outputs."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from omegaconf import DictConfig, OmegaConf

from earthcast.errors import UserError
from earthcast.tasks.allocator import keep_freed_memory
from earthcast.tasks.optim import accumulation_steps

log = logging.getLogger(__name__)

# trainer.precision value: bfloat16 autocast where the hardware computes in it natively, float32 elsewhere
# (emulated bfloat16 on an AVX2-only CPU makes a step ~10x slower, not faster)
NATIVE_BF16 = "bf16-mixed-if-native"


def write_json_atomic(path: Path, payload: dict) -> Path:
    """JSON with NaN written as null; temp name then rename, so a crash never leaves a half file."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(payload), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def write_csv_atomic(path: Path, frame) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def _instantiate_group(node: DictConfig | None) -> list:
    if not node:
        return []
    return [instantiate(value) for value in node.values() if value and "_target_" in value]


def world_size(trainer_cfg: DictConfig) -> int:
    """Devices × nodes as the trainer will use them (needed before the trainer exists)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        count = len(devices)
    elif devices in ("auto", -1, "-1"):
        accelerator = trainer_cfg.get("accelerator", "cpu")
        count = torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 1
    else:
        count = int(devices)
    return max(1, count) * int(trainer_cfg.get("num_nodes", 1))


def build_trainer(cfg: DictConfig, *, fit: bool) -> L.Trainer:
    """A Lightning trainer from cfg.trainer; loggers/callbacks from their groups; accumulation from optim."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    for key in ("accumulate_grad_batches", "gradient_clip_val", "callbacks", "logger"):
        if key in kwargs:
            raise UserError(f"trainer.{key} is set by earthcast; use optim.total_batch_size, "
                            f"optim.gradient_clip_val, callbacks=..., logger=... instead")
    if kwargs.get("precision") == NATIVE_BF16:
        kwargs["precision"] = native_bf16_or_fp32(kwargs.get("accelerator", "cpu"))
    kwargs["accumulate_grad_batches"] = accumulation_steps(
        cfg.optim.get("total_batch_size"), int(cfg.dataset.batch_size), world_size(cfg.trainer))
    kwargs["gradient_clip_val"] = cfg.optim.get("gradient_clip_val")
    callbacks = _instantiate_group(cfg.get("callbacks"))
    if not fit:  # callbacks that act only while fitting (weight averaging: the checkpoint already holds it)
        callbacks = [c for c in callbacks if not isinstance(c, (L.pytorch.callbacks.ModelCheckpoint,
                                                                 L.pytorch.callbacks.EarlyStopping,
                                                                 L.pytorch.callbacks.LearningRateMonitor,
                                                                 L.pytorch.callbacks.WeightAveraging))]
    loggers = _instantiate_group(cfg.get("logger")) if fit else False
    trainer = L.Trainer(callbacks=callbacks, logger=loggers, default_root_dir=cfg.paths.output_dir, **kwargs)
    # on the accelerator Lightning resolved ("auto" included), before the first step allocates anything big
    if isinstance(trainer.accelerator, CPUAccelerator):
        if cfg.get("cpu_keep_freed_memory", False):
            keep_freed_memory()
        if str(kwargs.get("precision", "")).startswith("bf16") and not cpu_has_fast_bf16():
            log.warning("trainer.precision=%s on a CPU without native bfloat16 (AVX-512 BF16 / AMX): steps will be "
                        "slower than in float32; set trainer.precision=32-true", kwargs["precision"])
    return trainer


def native_bf16_or_fp32(accelerator: str) -> str:
    """The Lightning precision that NATIVE_BF16 stands for on this machine and accelerator."""
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    native = torch.cuda.is_bf16_supported(including_emulation=False) if on_gpu else cpu_has_fast_bf16()
    choice = "bf16-mixed" if native else "32-true"
    log.info("trainer.precision=%s: %s (%s %s native bfloat16)", NATIVE_BF16, choice, "GPU" if on_gpu else "CPU",
             "has" if native else "lacks")
    return choice


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bfloat16 matrix products natively on this CPU."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read an earthcast checkpoint with weights_only=True; one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass ckpt_path=<run dir>/checkpoints/best.ckpt "
                        f"(or last.ckpt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}); it is corrupt, truncated or "
                        f"not a checkpoint: re-copy it or pick another") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{path} is not a Lightning checkpoint (no state_dict); pick a checkpoints/*.ckpt file")
    return checkpoint


def checkpoint_overrides(checkpoint: dict) -> list[str]:
    """The command-line overrides the checkpoint's run was composed with (replayed to rebuild it)."""
    return list(checkpoint.get("earthcast", {}).get("overrides", []))


def restore_weights(task, checkpoint: dict, path: str | os.PathLike) -> None:
    try:
        task.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not fit model={task.config['model']['name']} as configured "
                        f"({first}); drop the model overrides that differ from the training run") from None


def initialize_weights(task, path: str, strict: bool = True) -> None:
    """Start training from another run's (or a converted) checkpoint's weights, with a fresh optimizer and
    schedule. Non-strict loading takes every weight whose name and shape fit and lists the rest in one line."""
    source = load_checkpoint(path)["state_dict"]
    ours = task.state_dict()
    fits = {k: v for k, v in source.items() if k in ours and ours[k].shape == v.shape}
    misfits = [f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in source.items()
               if k in ours and ours[k].shape != v.shape]
    missing = [k for k in ours if k not in source]
    unexpected = [k for k in source if k not in ours]
    problems = [f"{label} {len(keys)} ({', '.join(keys[:3])}{' …' if len(keys) > 3 else ''})"
                for label, keys in (("shape mismatch", misfits), ("not in checkpoint", missing),
                                    ("not in model", unexpected)) if keys]
    if problems and strict:
        raise UserError(f"init_from={path} does not fit model={task.config['model']['name']}: {'; '.join(problems)}; "
                        f"set init_strict=false to load only the weights that fit")
    task.load_state_dict(fits, strict=False)
    log.info("init_from=%s: %d of %d weights loaded%s", path, len(fits), len(ours),
             f"; left at their initialisation: {'; '.join(problems)}" if problems else "")


def restore_datamodule_state(datamodule, checkpoint: dict) -> None:
    """Datamodule state (e.g. ENSO normalisation statistics) saved by Lightning beside the weights."""
    state = checkpoint.get(type(datamodule).__qualname__)
    if state and hasattr(datamodule, "load_state_dict"):
        datamodule.load_state_dict(state)


def checkpoint_callback(trainer: L.Trainer):
    for callback in trainer.callbacks:
        if isinstance(callback, L.pytorch.callbacks.ModelCheckpoint):
            return callback
    return None
