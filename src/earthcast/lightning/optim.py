"""AdamW parameter groups, gradient accumulation and the warm-up + cosine learning-rate schedule.

The schedule is a pure function of the *optimizer* step, the same as the Earthformer reference's (linear
warm-up from `warmup_start_factor`, then cosine annealing to `min_lr_ratio`). Its length is the number of
optimizer steps the trainer will take (Lightning's `estimated_stepping_batches`, which divides micro-batches by
the accumulation factor); counting micro-batches instead would end the cosine early and let it climb back up,
a known defect of the reference code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from earthcast.errors import UserError

_NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                     nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Embedding)


WEIGHT_DECAY_RULES = ("earthcast", "reference", "all")


def parameter_groups(model: nn.Module, weight_decay: float, rule: str = "earthcast") -> list[dict]:
    """Two AdamW groups, with and without weight decay. Which parameters are spared:

    'earthcast'  biases, norms, embeddings and every other parameter with fewer than 2 dimensions, plus names a
                 model lists in a timm-style `no_weight_decay()` (e.g. position embeddings, global vectors);
    'reference'  what the Earthformer reference trains with: LayerNorm parameters and parameters whose name
                 contains "bias" (so embeddings, GroupNorm weights and global vectors are decayed);
    'all'        none: every parameter is decayed, as PreDiff's reference hands AdamW one parameter list.
    """
    if rule not in WEIGHT_DECAY_RULES:
        raise UserError(f"optim.weight_decay_rule={rule!r}: use one of {', '.join(WEIGHT_DECAY_RULES)}")
    exempt_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            if rule == "all":
                exempt = False
            elif rule == "reference":
                exempt = isinstance(module, nn.LayerNorm) or "bias" in full_name
            else:
                exempt = (
                    param.ndim < 2
                    or isinstance(module, _NO_DECAY_MODULES)
                    or full_name in exempt_names
                    or any(full_name.startswith(f"{name}.") or full_name.endswith(name) for name in exempt_names)
                )
            (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def accumulation_steps(total_batch_size: int | None, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches to accumulate so that one optimizer step sees `total_batch_size` samples."""
    per_step = micro_batch_size * world_size
    if total_batch_size is None:
        return 1
    if total_batch_size < per_step or total_batch_size % per_step:
        raise UserError(
            f"optim.total_batch_size={total_batch_size} is not a multiple of dataset.batch_size "
            f"({micro_batch_size}) x devices ({world_size}) = {per_step}; change one of them"
        )
    return total_batch_size // per_step


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float,
                         warmup_start_factor: float = 0.0) -> float:
    """LR multiplier at optimizer step `step` (0-based): from `warmup_start_factor` at step 0 linearly to 1 at
    `warmup_steps`, then a cosine that would reach `min_ratio` at `total_steps` (held there after)."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, optim_cfg, total_steps: int):
    """AdamW + a per-step LambdaLR from cfg.optim (configs/optim/adamw.yaml), in the form Lightning's
    configure_optimizers returns."""
    if optim_cfg["name"] != "adamw":
        raise UserError(f"optim.name={optim_cfg['name']!r} is not supported; use adamw")
    optimizer = torch.optim.AdamW(
        parameter_groups(model, float(optim_cfg["weight_decay"]), str(optim_cfg["weight_decay_rule"])),
        lr=float(optim_cfg["lr"]),
        betas=tuple(optim_cfg["betas"]),
    )
    total_steps = max(1, int(total_steps))
    warmup_steps = int(round(float(optim_cfg["warmup_fraction"]) * total_steps))
    min_ratio = float(optim_cfg["min_lr_ratio"])
    start = float(optim_cfg["warmup_start_factor"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_steps, min_ratio, start)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
