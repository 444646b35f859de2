"""Convolutional stem (initial downsampling) and its mirror, the upsampling head.

Stem, per stage:  [3×3 conv → GroupNorm → activation] × n  →  patch merge by (1, s, s)   (or (t, h, w))
Head, per stage in reverse:  nearest upsample to the stage's input size + 3×3 conv  →  [conv → GN → act] × n
The 'conv' stem of the paper's ENSO model is a single stage at base_units with GroupNorm(16); 'stack_conv'
(SEVIR) stacks stages with their own widths and GroupNorm(width / 4).
With `recompute` (Earthformer's checkpoint_level 3) each stage's activations are recomputed in backward instead
of stored: at full resolution they are the largest of the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from earthcast.layers.blocks import PatchMerge, Upsample, activation, frames, unframes
from earthcast.layers.norm import GroupNorm

Shape4 = tuple[int, int, int, int]


def conv_stack(c_in: int, c_out: int, num_convs: int, groups: int, act: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), GroupNorm(groups, c_out),
                   activation(act)]
    return nn.Sequential(*layers)


class ConvStem(nn.Module):
    """(B, T, H, W, C_in) → (B, T', H', W', dims[-1]) through the stages described in the module docstring."""

    def __init__(self, in_channels: int, dims: Sequence[int], scales: Sequence[tuple[int, int, int]],
                 num_convs: Sequence[int], groups: Sequence[int], act: str = "leaky",
                 padding_type: str = "zeros", recompute: bool = False):
        super().__init__()
        self.recompute = recompute
        widths = [in_channels, *dims]
        self.convs = nn.ModuleList(
            conv_stack(widths[i], widths[i + 1], num_convs[i], groups[i], act) for i in range(len(dims))
        )
        self.merges = nn.ModuleList(
            PatchMerge(dim, dim, scale, padding_type=padding_type) for dim, scale in zip(dims, scales)
        )

    def out_shapes(self, shape: Shape4) -> list[Shape4]:
        """The (T, H, W, C) grid after each stage, for an input grid `shape`."""
        shapes = []
        for merge in self.merges:
            shape = merge.out_shape(shape)
            shapes.append(shape)
        return shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for convs, merge in zip(self.convs, self.merges):
            x = run_stage(self, _stem_stage, x, convs, merge)
        return x


class ConvHead(nn.Module):
    """Mirror of `ConvStem`: (B, T, H', W', dims[-1]) → (B, T, H, W, dims[0]).

    `sizes[i]` is the (H, W) that stem stage i received, `dims[i]` the width it produced; head stage i
    upsamples to sizes[i] at the width it receives and convolves down to dims[i] (the order runs from the
    last stem stage back to the first)."""

    def __init__(self, dims: Sequence[int], sizes: Sequence[tuple[int, int]], num_convs: Sequence[int],
                 groups: Sequence[int], act: str = "leaky", recompute: bool = False):
        super().__init__()
        self.recompute = recompute
        stages = list(reversed(range(len(dims))))
        c_in = [dims[min(i + 1, len(dims) - 1)] for i in stages]
        self.upsamples = nn.ModuleList(Upsample(c, c, sizes[i]) for c, i in zip(c_in, stages))
        self.convs = nn.ModuleList(
            conv_stack(c, dims[i], num_convs[i], groups[i], act) for c, i in zip(c_in, stages)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for upsample, convs in zip(self.upsamples, self.convs):
            x = run_stage(self, _head_stage, x, convs, upsample)
        return x


def _stem_stage(x: torch.Tensor, convs: nn.Sequential, merge: nn.Module) -> torch.Tensor:
    if len(convs):
        x = unframes(convs(frames(x)), x.shape[0])
    return merge(x)


def _head_stage(x: torch.Tensor, convs: nn.Sequential, upsample: nn.Module) -> torch.Tensor:
    x = upsample(x)
    if len(convs):
        x = unframes(convs(frames(x)), x.shape[0])
    return x


def run_stage(owner: nn.Module, stage, x: torch.Tensor, *modules: nn.Module) -> torch.Tensor:
    """One stem/head stage, its activations recomputed in backward when the owner's `recompute` is on."""
    if owner.recompute and owner.training and torch.is_grad_enabled():
        return checkpoint(stage, x, *modules, use_reentrant=False)
    return stage(x, *modules)
