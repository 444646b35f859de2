"""The Lightning Trainer of every command, from cfg.trainer, cfg.callbacks, cfg.logger and cfg.optim.

Accumulation comes from optim.total_batch_size and clipping from optim.gradient_clip_val; the callbacks that
only make sense while fitting (checkpointing, early stopping, LR monitor, weight averaging) and the loggers are
left out of evaluation trainers. On the CPU the allocator setting (`cpu_keep_freed_memory`) applies, and
`trainer.precision=bf16-mixed-if-native` resolves to bfloat16 only where the hardware has it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    WeightAveraging,
)
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from earthcast.errors import UserError
from earthcast.lightning.allocator import keep_freed_memory
from earthcast.lightning.checkpoint import Checkpoint, CheckpointReadOnce, RunRecord
from earthcast.lightning.loggers import ContinuingCSVLogger
from earthcast.lightning.optim import accumulation_steps
from earthcast.lightning.preemption import StopOnSignal

log = logging.getLogger(__name__)

# trainer.precision value: bfloat16 autocast where the hardware computes in it natively, float32 elsewhere
# (emulated bfloat16 on an AVX2-only CPU makes a step ~10x slower, not faster)
NATIVE_BF16 = "bf16-mixed-if-native"
FIT_ONLY_CALLBACKS = (ModelCheckpoint, EarlyStopping, LearningRateMonitor, WeightAveraging)
MONITOR_MODES = ("max", "min")
#: loggers a resumed run continues from its checkpoint's step (earthcast.lightning.trainer.build_loggers)
CONTINUED_LOGGERS = ("earthcast.lightning.loggers.ContinuingCSVLogger", "lightning.pytorch.loggers.TensorBoardLogger")


#: loggers that need an optional dependency: logger name → the extra that installs it
LOGGER_EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}


def build_logger(name: str, node, **options):
    """One logger of cfg.logger (`options`: extra keyword arguments); a logger whose package is missing is a
    one-line error naming the extra."""
    try:
        return instantiate(node, **options)
    except Exception as err:  # noqa: BLE001 - Hydra wraps the logger's ImportError in its own exception
        cause = err.__cause__ or err
        if name in LOGGER_EXTRAS and isinstance(cause, ImportError | ModuleNotFoundError):
            raise UserError(f"logger={name} needs its package: pip install 'earthcast[{LOGGER_EXTRAS[name]}]'") from None
        raise


def build_trainer(cfg: DictConfig, *, fit: bool, checkpoint: Checkpoint | None = None,
                  callbacks: list[Callback] = (), progress_bar: bool = True, **settings) -> L.Trainer:
    """A trainer for fitting (`fit`) or for evaluation; `settings` override cfg.trainer's keys."""
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    for key in ("accumulate_grad_batches", "gradient_clip_val", "callbacks", "logger"):
        if key in kwargs:
            raise UserError(f"trainer.{key} is set by earthcast; use optim.total_batch_size, "
                            f"optim.gradient_clip_val, callbacks=..., logger=... instead")
    if cfg.monitor.mode not in MONITOR_MODES:
        raise UserError(f"monitor.mode is {cfg.monitor.mode!r}; use 'max' or 'min'")
    kwargs.update(settings)
    if kwargs.get("precision") == NATIVE_BF16:
        kwargs["precision"] = native_bf16_or_fp32(kwargs.get("accelerator", "auto"))
    kwargs["accumulate_grad_batches"] = accumulation_steps(
        cfg.optim.total_batch_size, int(cfg.dataset.batch_size), world_size(kwargs))
    kwargs["gradient_clip_val"] = cfg.optim.gradient_clip_val
    configured = [instantiate(node) for node in (cfg.callbacks or {}).values() if node and "_target_" in node]
    if not fit:  # the checkpoint already holds what weight averaging made
        configured = [c for c in configured if not isinstance(c, FIT_ONLY_CALLBACKS)]
    if not progress_bar:
        configured = [c for c in configured if not isinstance(c, ProgressBar)]
        kwargs["enable_progress_bar"] = False
    extra = [RunRecord(run_overrides()), stop_on_signal(cfg)] if fit else []
    loggers = build_loggers(cfg, checkpoint) if fit else False
    plugins = [CheckpointReadOnce(checkpoint)]
    if SLURMEnvironment.detect():  # earthcast saves and requeues itself (StopOnSignal), at a step boundary
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = L.Trainer(callbacks=[*configured, *extra, *callbacks], logger=loggers, plugins=plugins,
                        default_root_dir=cfg.paths.output_dir, **kwargs)
    # on the accelerator Lightning resolved ("auto" included), before the first step allocates anything big
    if isinstance(trainer.accelerator, CPUAccelerator):
        if cfg.cpu_keep_freed_memory:
            keep_freed_memory()
        if str(kwargs.get("precision", "")).startswith("bf16") and not cpu_has_fast_bf16():
            log.warning("trainer.precision=%s on a CPU without native bfloat16 (AVX-512 BF16 / AMX): steps will be "
                        "slower than in float32; set trainer.precision=32-true", kwargs["precision"])
    return trainer


def stop_on_signal(cfg: DictConfig) -> StopOnSignal:
    from earthcast.signals import parse_signal

    warning = parse_signal(cfg.preemption.signal) if cfg.preemption.requeue else None
    return StopOnSignal(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", requeue_signal=warning)


def build_loggers(cfg: DictConfig, checkpoint: Checkpoint | None) -> list:
    """cfg.logger's loggers; resuming from `checkpoint`, each continues its log from the checkpoint's step: a CSV
    log keeps the rows it held at the save, TensorBoard hides events from the checkpoint's step on (purge_step)."""
    rows = (checkpoint.content.get("earthcast", {}) if checkpoint else {}).get("log_rows", {})
    loggers = []
    for name, node in (cfg.logger or {}).items():
        if not node or "_target_" not in node:
            continue
        options = {}
        if checkpoint is not None and node["_target_"] in CONTINUED_LOGGERS:
            target = get_class(node["_target_"])
            if issubclass(target, ContinuingCSVLogger):
                metrics = Path(node["save_dir"]) / node["name"] / str(node["version"]) / "metrics.csv"
                options["keep_rows"] = rows.get(os.path.relpath(metrics, cfg.paths.output_dir))
            if issubclass(target, TensorBoardLogger):
                options["purge_step"] = int(checkpoint.content.get("global_step", 0))
        loggers.append(build_logger(name, node, **options))
    return loggers


def run_overrides() -> list[str]:
    """The command-line overrides of this run (the checkpoint's replayed ones included), minus Hydra's own
    and the checkpoints it started from: what rebuilds the run from one of its checkpoints."""
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task
            if not o.lstrip("+~").startswith(("hydra.", "hydra/", "ckpt_path=", "init_from=", "init_strict="))]


def world_size(trainer_kwargs: dict) -> int:
    """Devices × nodes as the trainer will use them (needed before the trainer exists)."""
    devices = trainer_kwargs.get("devices", "auto")  # Lightning's own defaults where the config leaves them out
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif devices in ("auto", -1, "-1"):
        accelerator = trainer_kwargs.get("accelerator", "auto")
        count = torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 1
    else:
        count = int(devices)
    return max(1, count) * int(trainer_kwargs.get("num_nodes", 1))


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
