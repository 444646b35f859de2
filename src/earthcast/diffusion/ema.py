"""Exponential moving average of a model's weights, kept as a second module that samples are drawn from.

The average is an ordinary frozen copy of the network (registered as a submodule by the Lightning task), so
it is saved in every checkpoint and `sample` uses it directly — no swapping of weights in and out.
The decay warms up as min(decay, (1 + n)/(10 + n)) over the first updates, so early averages are not
dominated by the random initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


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
