"""Persistence: the last observed frame repeated for every lead time (the nowcasting floor)."""

from __future__ import annotations

import torch

from earthcast.models.base import MODELS, Forecaster, configured


class Persistence(Forecaster):
    """No parameters: `earthcast train model=persistence` skips fitting and only tests."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        last = inputs[:, -1:]
        return last.expand(-1, self.out_len, *last.shape[2:]).contiguous()


MODELS.register("persistence")(configured(Persistence))
