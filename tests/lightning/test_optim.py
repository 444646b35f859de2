"""LR schedule, accumulation and weight-decay groups."""

import math

import lightning as L
import pytest
import torch
from torch import nn

from earthcast.errors import UserError
from earthcast.lightning.optim import (
    accumulation_steps,
    build_optimizer,
    parameter_groups,
    warmup_cosine_factor,
)
from tests.conftest import run_config


def test_accumulation_from_total_batch_size():
    assert accumulation_steps(32, micro_batch_size=4, world_size=2) == 4
    assert accumulation_steps(None, micro_batch_size=4, world_size=2) == 1
    assert accumulation_steps(8, micro_batch_size=8, world_size=1) == 1
    with pytest.raises(UserError, match="total_batch_size=30"):
        accumulation_steps(30, micro_batch_size=4, world_size=2)
    with pytest.raises(UserError):
        accumulation_steps(4, micro_batch_size=4, world_size=2)


def test_warmup_then_cosine_as_the_reference_schedules_it():
    """The reference's LambdaLR warm-up (start + (1 − start)·s/w) followed by CosineAnnealingLR from step w
    (T_max = total − w, eta_min = min_ratio·lr), step by step."""
    total, warmup, min_ratio, start = 100, 20, 1e-3, 0.1
    factors = [warmup_cosine_factor(s, total, warmup, min_ratio, start) for s in range(total + 5)]
    layer = nn.Linear(1, 1)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1.0)
    warm = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: start + (1 - start) * s / warmup)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=min_ratio)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup])
    reference = []
    for _ in range(total):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert factors[:total] == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert factors[0] == start and factors[warmup] == 1.0
    decay = factors[warmup:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # never climbs back up
    assert factors[total] == pytest.approx(min_ratio) and factors[-1] == pytest.approx(min_ratio)
    mid = warmup_cosine_factor(warmup + 40, total, warmup, min_ratio)
    assert mid == pytest.approx(min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_weight_decay_spares_biases_norms_and_named_embeddings():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)
            self.pos_embed = nn.Parameter(torch.zeros(3, 4))

        def no_weight_decay(self):
            return {"pos_embed"}

    model = Tiny()
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p is model.linear.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {id(model.linear.bias), id(model.norm.weight),
                                                   id(model.norm.bias), id(model.pos_embed)}


def test_reference_weight_decay_rule_spares_only_layer_norms_and_biases():
    """The Earthformer reference decays everything but LayerNorm parameters and names containing 'bias':
    embeddings, GroupNorm weights and relative-position bias tables are told apart by that rule."""
    model = nn.ModuleDict({"linear": nn.Linear(4, 4), "layer_norm": nn.LayerNorm(4), "group_norm": nn.GroupNorm(2, 4),
                           "embed": nn.Embedding(3, 4)})
    model.relative_position_bias = nn.Parameter(torch.zeros(5, 2))
    decay, no_decay = parameter_groups(model, weight_decay=0.1, rule="reference")
    assert {id(p) for p in decay["params"]} == {id(model["linear"].weight), id(model["group_norm"].weight),
                                                id(model["embed"].weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model["linear"].bias), id(model["layer_norm"].weight), id(model["layer_norm"].bias),
        id(model["group_norm"].bias), id(model.relative_position_bias)}
    with pytest.raises(UserError, match="weight_decay_rule"):
        parameter_groups(model, 0.1, rule="timm")


def test_all_weight_decay_rule_decays_every_parameter():
    """PreDiff's reference hands AdamW one parameter list: norms, biases and learned log-variances decay too."""
    model = nn.ModuleDict({"linear": nn.Linear(4, 4), "group_norm": nn.GroupNorm(2, 4)})
    model.logvar = nn.Parameter(torch.zeros(10))
    groups = parameter_groups(model, weight_decay=0.01, rule="all")
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}


class _Regression(L.LightningModule):
    def __init__(self, optim_cfg):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.optim_cfg = optim_cfg
        self.lrs = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def on_before_optimizer_step(self, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        return build_optimizer(self.layer, self.optim_cfg, self.trainer.estimated_stepping_batches)


def test_schedule_counts_optimizer_steps_with_accumulation(tmp_path):
    """10 micro-batches/epoch, accumulation 4 → ceil(10/4)=3 optimizer steps/epoch; 3 epochs → 9 steps.
    The cosine must end exactly on the 9th optimizer step (not after 30 micro-batches)."""
    data = torch.utils.data.TensorDataset(torch.randn(20, 2), torch.randn(20, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    cfg = run_config(["optim.lr=1.0", "optim.weight_decay=0.0", "optim.warmup_fraction=0.0",
                      "optim.min_lr_ratio=0.01"])["optim"]
    module = _Regression(cfg)
    trainer = L.Trainer(max_epochs=3, accumulate_grad_batches=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, loader)
    assert trainer.estimated_stepping_batches == 9
    assert len(module.lrs) == 9
    assert module.lrs == pytest.approx([warmup_cosine_factor(s, 9, 0, 0.01) for s in range(9)])
    assert module.lrs[-1] < 0.05  # a schedule over 30 micro-batches would still be near its top here
    assert all(a >= b for a, b in zip(module.lrs, module.lrs[1:]))
