"""The Lightning Trainer of every command, from cfg.trainer, cfg.callbacks, cfg.logger and cfg.optim.

Accumulation comes from optim.total_batch_size and clipping from optim.gradient_clip_val; the callbacks that
only make sense while fitting (checkpointing, early stopping, LR monitor, weight averaging) and the loggers are
left out of evaluation trainers. On the CPU the allocator setting (`cpu_keep_freed_memory`) applies, and
`trainer.precision=bf16-mixed-if-native` resolves to bfloat16 only where the hardware has it.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    WeightAveraging,
)
from omegaconf import DictConfig, OmegaConf

from earthcast.errors import UserError
from earthcast.lightning.allocator import keep_freed_memory
from earthcast.lightning.checkpoint import Checkpoint, CheckpointReadOnce, RunOverrides
from earthcast.lightning.optim import accumulation_steps

log = logging.getLogger(__name__)

# trainer.precision value: bfloat16 autocast where the hardware computes in it natively, float32 elsewhere
# (emulated bfloat16 on an AVX2-only CPU makes a step ~10x slower, not faster)
NATIVE_BF16 = "bf16-mixed-if-native"
FIT_ONLY_CALLBACKS = (ModelCheckpoint, EarlyStopping, LearningRateMonitor, WeightAveraging)
MONITOR_MODES = ("max", "min")


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
    extra = [RunOverrides(run_overrides())] if fit else []
    loggers = [instantiate(node) for node in (cfg.logger or {}).values() if node and "_target_" in node] if fit \
        else False
    trainer = L.Trainer(callbacks=[*configured, *extra, *callbacks], logger=loggers,
                        plugins=[CheckpointReadOnce(checkpoint)], default_root_dir=cfg.paths.output_dir, **kwargs)
    # on the accelerator Lightning resolved ("auto" included), before the first step allocates anything big
    if isinstance(trainer.accelerator, CPUAccelerator):
        if cfg.cpu_keep_freed_memory:
            keep_freed_memory()
        if str(kwargs.get("precision", "")).startswith("bf16") and not cpu_has_fast_bf16():
            log.warning("trainer.precision=%s on a CPU without native bfloat16 (AVX-512 BF16 / AMX): steps will be "
                        "slower than in float32; set trainer.precision=32-true", kwargs["precision"])
    return trainer


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
