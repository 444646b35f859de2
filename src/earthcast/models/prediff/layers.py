"""Building blocks shared by the PreDiff networks (Gao et al., NeurIPS 2023; github.com/gaozhihan/PreDiff):
residual blocks (2-D for the VAE, 3-D and timestep-conditioned for the denoiser and the alignment network),
the timestep embedding, the observation-indicator input, the Earthformer level that applies one
time-embedded residual block before each of its cuboid self-attention blocks, and the input and down path
that the denoiser and the alignment network share.

Convolutions run channels-first; the Earthformer parts are channels-last (B, T, H, W, C) like
earthcast.layers, whose cuboid-attention blocks are reused here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.layers.blocks import PatchMerge, PositionEmbedding, SelfAttentionBlock
from earthcast.layers.init import init_linear
from earthcast.layers.norm import GroupNorm
from earthcast.layers.patterns import self_pattern


def group_norm(channels: int, groups: int, eps: float = 1e-5) -> GroupNorm:
    """GroupNorm with `groups` groups, or one group per channel when `groups` does not divide `channels`
    (the reference's rule for its residual blocks, e.g. the 65-channel input of the denoiser)."""
    return GroupNorm(groups if channels % groups == 0 else channels, channels, eps=eps)


class ResidualBlock(nn.Module):
    """norm → SiLU → 3×3(×3) conv (+ projected timestep embedding) → norm → SiLU → dropout → 3×3(×3) conv,
    added to the input (through a 1×1(×1) conv when the width changes).

    dims=2: the VAE's block (diffusers' ResnetBlock2D layout), on (N, C, H, W).
    dims=3: the denoiser's block (the LDM ResBlock with 3-D convolutions, `zero_init_last`: it starts as the
    identity), on channels-last sequences (B, T, H, W, C); GroupNorm then normalises over T×H×W."""

    def __init__(self, in_channels: int, out_channels: int, *, dims: int = 2, groups: int = 32,
                 eps: float = 1e-6, embed_dim: int | None = None, dropout: float = 0.0,
                 zero_init_last: bool = False):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.dims = dims
        self.norm1 = group_norm(in_channels, groups, eps)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_channels) if embed_dim else None
        self.norm2 = group_norm(out_channels, groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        self.skip = conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        if self.embed is not None:
            init_linear(self.embed)
        if zero_init_last:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        if self.dims == 3:  # channels-last sequence → (B, C, T, H, W) and back
            # a contiguous copy: GroupNorm's CPU backward crashes (torch 2.13) on a channels-last input that
            # needs no gradient itself, e.g. the denoiser's input
            return self._forward(x.permute(0, 4, 1, 2, 3).contiguous(), embedding).permute(0, 2, 3, 4, 1)
        return self._forward(x, embedding)

    def _forward(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.embed is not None:
            h = h + self.embed(F.silu(embedding)).view(*h.shape[:2], *(1,) * self.dims)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features [cos, sin] of the timesteps t (B,) taken as floats → (B, dim), as in DDPM/LDM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(features, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features → Linear → SiLU → Linear (PyTorch's default initialisation, as the reference)."""

    def __init__(self, base_dim: int, embed_dim: int):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.base_dim))


def with_observation_channel(context: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
    """[context ; future] along time, plus a channel that is 1 on observed (context) frames and 0 on the
    frames to forecast, so the network can tell them apart: (B, T_in + T_out, H, W, C + 1)."""
    sequence = torch.cat([context, future.to(context.dtype)], dim=1)
    indicator = torch.zeros_like(sequence[..., :1])
    indicator[:, : context.shape[1]] = 1
    return torch.cat([sequence, indicator], dim=-1)


class EarthformerLevel(nn.Module):
    """One level of the Earthformer-UNet: `depth` × [the level's time-embedded 3-D residual block → a cuboid
    self-attention block]. The one residual block is applied before each attention block (the reference's
    layout: one block per level, reused `depth` times)."""

    def __init__(self, dim: int, grid: tuple[int, int, int], depth: int, embed_dim: int, *, num_heads: int,
                 pattern: str = "axial", groups: int = 32, dropout: float = 0.0, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, ffn_drop: float = 0.0, use_relative_pos: bool = True,
                 checkpoint_level: int = 0):
        super().__init__()
        self.res = ResidualBlock(dim, dim, dims=3, groups=groups, eps=1e-5, embed_dim=embed_dim, dropout=dropout,
                                 zero_init_last=True)
        layers = self_pattern(pattern, grid)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim, num_heads, layers, ffn_drop=ffn_drop, checkpoint_level=checkpoint_level,
                               attn_drop=attn_drop, proj_drop=proj_drop, use_relative_pos=use_relative_pos,
                               zero_init_residual=True)
            for _ in range(depth))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(self.res(x, embedding))
        return x


class NoisyLatentEncoder(nn.Module):
    """The input and down path the denoiser and the alignment network share (the reference builds both the
    same way): a 3-D residual block from `in_channels` to base_units (no timestep), a learned position
    embedding, the timestep embedding, then per level (patch merging ×2 in space, ×2 width between levels)
    an `EarthformerLevel`. `down_path` returns every level's output and the timestep embedding."""

    def __init__(self, in_channels: int, length: int, latent_hw: int | Sequence[int], base_units: int,
                 depth: Sequence[int], *, num_heads: int, self_pattern: str, time_embed_mult: int,
                 norm_groups: int, dropout: float, attn_drop: float, proj_drop: float, ffn_drop: float,
                 use_relative_pos: bool, checkpoint_level: int = 0):
        super().__init__()
        depth = [int(d) for d in depth]
        self.shapes = level_shapes(length, as_pair(latent_hw), base_units, len(depth))
        self.embed_dim = time_embed_mult * base_units
        self.level_options = dict(num_heads=num_heads, pattern=self_pattern, groups=norm_groups, dropout=dropout,
                                  attn_drop=attn_drop, proj_drop=proj_drop, ffn_drop=ffn_drop,
                                  use_relative_pos=use_relative_pos, checkpoint_level=checkpoint_level)
        self.proj_in = ResidualBlock(in_channels, base_units, dims=3, groups=norm_groups, eps=1e-5,
                                     dropout=proj_drop, zero_init_last=True)
        self.pos_embed = PositionEmbedding(base_units, *self.shapes[0][:3])
        self.time_embed = TimestepEmbedding(base_units, self.embed_dim)
        self.down = self.levels(depth)
        self.merge = nn.ModuleList(PatchMerge(a[3], b[3], (1, 2, 2)) for a, b in zip(self.shapes, self.shapes[1:]))

    def levels(self, depth: Sequence[int]) -> nn.ModuleList:
        """One `EarthformerLevel` per level, `depth[i]` attention blocks each."""
        return nn.ModuleList(EarthformerLevel(s[3], s[:3], int(n), self.embed_dim, **self.level_options)
                             for s, n in zip(self.shapes, depth))

    def down_path(self, x: torch.Tensor, t: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.pos_embed(self.proj_in(x))
        embedding = self.time_embed(t)
        outputs = []
        for i, level in enumerate(self.down):
            if i > 0:
                x = self.merge[i - 1](x)
            x = level(x, embedding)
            outputs.append(x)
        return outputs, embedding


def level_shapes(length: int, hw: tuple[int, int], base_units: int, levels: int) -> list[tuple[int, int, int, int]]:
    """(T, H, W, C) of each level: ×2 patch merging in space and ×2 width per level (odd sides padded)."""
    (h, w), shapes = hw, []
    for i in range(levels):
        shapes.append((length, h, w, base_units * 2**i))
        h, w = -(-h // 2), -(-w // 2)
    return shapes


def as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])
