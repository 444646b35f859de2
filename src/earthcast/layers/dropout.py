"""Dropout with a cheaper random mask on the CPU.

On the CPU, `F.dropout` draws one Bernoulli sample per element (`bernoulli_`, single-threaded), which took
~13% of an Earthformer SEVIR-LR training step on 2 cores. Here one 32-bit draw of the same torch generator
(`random_`, 31 random bits) serves two elements: 15 bits of each 16-bit half are compared with a threshold
that drops with probability p' = round(p·2¹⁵)/2¹⁵ (|p' − p| ≤ 1.5·10⁻⁵), and kept values are
scaled by 1/(1 − p'), so the layer is unbiased exactly as F.dropout is. Other devices, and code traced by
torch.compile, use F.dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BITS = 15  # random bits used per element: the high half of a non-negative int32 draw has 15


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device=None) -> tuple[torch.Tensor, float]:
    """(bool mask of kept elements, drop probability it realises) from the global torch generator."""
    numel = 1
    for size in shape:
        numel *= size
    cut = round(p * 2**_BITS)  # dropped: the lowest `cut` of 2**15 equally likely values
    if cut >= 2**_BITS:
        return torch.zeros(shape, dtype=torch.bool, device=device), 1.0
    draws = torch.empty((numel + 1) // 2, dtype=torch.int32, device=device).random_()
    # each int16 half, masked to 15 bits, is uniform on [0, 2**15): keep it if >= cut (one scalar compare
    # over the whole buffer; per-half thresholds would need a slow broadcast)
    keep = (draws.view(torch.int16) & (2**_BITS - 1)) >= cut
    keep = keep[:numel].view(shape)
    return keep, cut / 2**_BITS


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    # under torch.compile, inductor generates its own fused random numbers for F.dropout
    if x.device.type != "cpu" or not x.is_floating_point() or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    keep, realised = keep_mask(x.shape, p, x.device)
    return x.mul(keep).mul_(1.0 / (1.0 - realised)) if realised < 1.0 else x.mul(keep)


class Dropout(nn.Module):
    """Drop-in for nn.Dropout (same p, train/eval behaviour), using `dropout` above."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
