"""The model interface every forecaster implements.

A forecaster maps a context sequence to a future sequence, both channels-last:
    inputs  B × T_in  × H × W × C   (float, dataset-normalised, e.g. VIL/255 in [0, 1])
    outputs B × T_out × H × W × C
Models are plain `nn.Module`s built from their config by name through `MODELS`; the Lightning task
(earthcast.tasks) owns losses, optimisation and evaluation.
"""

from __future__ import annotations

from torch import nn

from earthcast.registry import Registry

MODELS = Registry("model")


class Forecaster(nn.Module):
    """Base class: subclasses set in_len, out_len and implement forward(inputs) -> outputs."""

    def __init__(self, in_len: int, out_len: int):
        super().__init__()
        self.in_len = in_len
        self.out_len = out_len
