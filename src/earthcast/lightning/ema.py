"""Exponential moving averages of weights, the two ways earthcast keeps them.

`EMAWeights` (`callbacks=ema`): Lightning's EMAWeightAveraging for any module. The average replaces the
weights for validation and is what checkpoints store as `state_dict` (the raw weights go to
`current_model_state`, for resuming), so the best checkpoint, the test after fit, `eval` and `predict` all
score the averaged weights.

`frozen_copy` + `update_average`: a second copy of one network kept inside a module (the PreDiff denoiser's
`denoiser_ema`), saved under its own keys beside the online weights. Later stages and `earthcast sample`
read the average straight from those keys, no swapping. The decay warms up as min(decay, (1 + n)/(10 + n))
over the first updates, so early averages are not dominated by the random initialisation.
"""

from __future__ import annotations

import copy

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn


class EMAWeights(EMAWeightAveraging):
    """Lightning's loading hook restores the raw weights whenever it still holds an average, which includes
    `trainer.test(ckpt_path=...)` right after `fit`: the test would then score the raw weights. Outside
    fitting we keep what `state_dict` loaded, the average, so `train`'s test scores the weights that
    validation selected; `eval` and `predict` build their trainer without this callback and load the same
    `state_dict`."""

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)


def frozen_copy(model: nn.Module) -> nn.Module:
    average = copy.deepcopy(model)
    average.requires_grad_(False)
    return average.eval()


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float, num_updates: int) -> float:
    """average ← d·average + (1 − d)·model for parameters; buffers are copied. Returns the decay used."""
    d = min(decay, (1 + num_updates) / (10 + num_updates))
    for avg, new in zip(average.parameters(), model.parameters()):
        avg.lerp_(new.detach(), 1 - d)
    for avg, new in zip(average.buffers(), model.buffers()):
        avg.copy_(new)
    return d
