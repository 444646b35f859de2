"""The model interface every forecaster implements.

A forecaster maps a context sequence to a future sequence, both channels-last:
    inputs  B × T_in  × H × W × C   (float, dataset-normalised, e.g. VIL/255 in [0, 1])
    outputs B × T_out × H × W × C
Models are plain `nn.Module`s built from their config by name through `MODELS`; the LightningModule
(earthcast.lightning) owns losses, optimisation and evaluation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from earthcast.config import plain
from earthcast.errors import UserError
from earthcast.registry import Registry

MODELS = Registry("model")


class Forecaster(nn.Module):
    """Base class: subclasses set in_len, out_len and implement forward(inputs) -> outputs."""

    def __init__(self, in_len: int, out_len: int):
        super().__init__()
        self.in_len = in_len
        self.out_len = out_len


def configured(cls: type[Forecaster]) -> Callable[..., Forecaster]:
    """A builder for MODELS: every key of the model config but `name` is a constructor argument of `cls`
    (configs/model/<name>.yaml lists them); a key it does not take is a one-line error."""

    def build(cfg) -> Forecaster:
        options = plain(cfg)
        name = options.pop("name", cls.__name__)
        accepted = set(inspect.signature(cls).parameters)
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise UserError(f"model.{unknown[0]} is not a setting of model={name}; known: {', '.join(sorted(accepted))}")
        return cls(**options)

    return build
