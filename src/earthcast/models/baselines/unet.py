"""A small 2-D UNet baseline.

Time is folded into channels: the T_in context frames enter as T_in·C channels and the T_out forecast frames
leave as T_out·C channels, as in the SEVIR benchmark's UNet baseline (Veillette et al., NeurIPS 2020).
Spatial sizes that are not a multiple of 2**depth are padded and cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from earthcast.layers.norm import GroupNorm
from earthcast.models.base import MODELS, Forecaster, configured


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return GroupNorm(math.gcd(8, channels), channels)  # largest group count ≤ 8 dividing channels
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions, each followed by a norm and a SiLU."""

    def __init__(self, c_in: int, c_out: int, norm: str, dropout: float):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(norm, c_out),
            nn.SiLU(),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            _norm(norm, c_out),
            nn.SiLU(),
        )


class UNet(Forecaster):
    def __init__(self, in_len: int, out_len: int, channels: int = 1, base_units: int = 32, depth: int = 3,
                 norm: str = "group", dropout: float = 0.0):
        super().__init__(in_len, out_len)
        self.channels = channels
        self.depth = depth
        widths = [base_units * 2**i for i in range(depth + 1)]
        self.stem = ConvBlock(in_len * channels, widths[0], norm, dropout)
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1], norm, dropout) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2) for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(ConvBlock(2 * widths[i], widths[i], norm, dropout) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_len * channels, kernel_size=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _, _, height, width, _ = inputs.shape
        x = rearrange(inputs, "b t h w c -> b (t c) h w")
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        x = F.pad(x, (0, pad_w, 0, pad_h))

        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for upsample, merge in zip(self.up, self.merge):
            x = merge(torch.cat([upsample(x), skips.pop()], dim=1))
        x = self.head(x)[..., :height, :width]
        return rearrange(x, "b (t c) h w -> b t h w c", t=self.out_len, c=self.channels)


MODELS.register("unet")(configured(UNet))
