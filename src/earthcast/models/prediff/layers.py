"""Building blocks shared by the PreDiff networks: convolutional residual blocks (optionally conditioned on
the diffusion timestep), spatial attention, timestep embeddings, and the Earthformer "level" that
interleaves time-embedded residual blocks with cuboid self-attention.

Convolutions run per frame on (N, C, H, W); the Earthformer parts are channels-last (B, T, H, W, C) like
earthcast.models.earthformer, whose blocks are reused here unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.layers.blocks import SelfAttentionBlock, frames, unframes
from earthcast.layers.patterns import self_pattern


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ `groups` that divides `channels` (tiny configs)."""
    groups = max(1, min(groups, channels))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """norm → SiLU → 3×3 conv (+ projected timestep embedding) → norm → SiLU → dropout → 3×3 conv, plus a
    1×1-projected skip when the width changes. The second conv starts at zero, so each block starts as the
    identity (stable deep stacks, as in DDPM/LDM)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 32, dropout: float = 0.0,
                 embed_dim: int | None = None):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_channels) if embed_dim else None
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.embed is not None and embedding is not None:
            h = h + self.embed(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """Single-head self-attention over the pixels of a frame (the VAE's mid block), with its residual."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # (N, HW, C) each
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(1, 2).reshape(n, c, h, w))


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of integer timesteps (B,) → (B, dim), as in the Transformer / DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(features, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features → Linear → SiLU → Linear."""

    def __init__(self, base_dim: int, embed_dim: int):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.base_dim))


def with_observation_channel(context: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
    """[context ; future] along time, plus a channel that is 1 on observed (context) frames and 0 on the
    frames to forecast, so attention can tell them apart: (B, T_in + T_out, H, W, C + 1)."""
    sequence = torch.cat([context, future.to(context.dtype)], dim=1)
    indicator = torch.zeros_like(sequence[..., :1])
    indicator[:, : context.shape[1]] = 1
    return torch.cat([sequence, indicator], dim=-1)


class EarthformerLevel(nn.Module):
    """`depth` × [time-embedded residual block per frame → cuboid self-attention block] on a fixed grid."""

    def __init__(self, dim: int, grid: tuple[int, int, int], depth: int, embed_dim: int, *, num_heads: int,
                 pattern: str = "axial", groups: int = 32, dropout: float = 0.0, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, ffn_drop: float = 0.0, use_relative_pos: bool = True,
                 checkpoint_level: int = 0):
        super().__init__()
        layers = self_pattern(pattern, grid)
        self.res = nn.ModuleList(ResnetBlock(dim, dim, groups, dropout, embed_dim) for _ in range(depth))
        self.attn = nn.ModuleList(
            SelfAttentionBlock(dim, num_heads, layers, ffn_drop=ffn_drop, checkpoint_level=checkpoint_level,
                               attn_drop=attn_drop, proj_drop=proj_drop, use_relative_pos=use_relative_pos)
            for _ in range(depth))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[:2]
        per_frame = embedding.repeat_interleave(length, dim=0)  # (B·T, E), frames are batch-major
        for res, attn in zip(self.res, self.attn):
            x = unframes(res(frames(x), per_frame), batch)
            x = attn(x)
        return x


def as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])
