"""Earthformer-UNet: the latent denoiser of PreDiff (stage 2).

    input   noisy future latents z_t (B, T_out, h, w, C), timestep t (B,), context latents (B, T_in, h, w, C)
    output  the prediction for the future frames (ε, v or z_0, as trained), (B, T_out, h, w, C)

The context is concatenated with the noisy future along time, with an observation-indicator channel
(layers.with_observation_channel), so every attention layer sees the whole (T_in + T_out) sequence.
Two levels: level 1 at the latent resolution, patch merging (×2 in space, ×2 width) to level 2, and back up
with nearest upsampling + 3×3 conv and an additive skip from level 1. Each level interleaves time-embedded
residual blocks with cuboid self-attention blocks (axial by default) from earthcast.models.earthformer.
The output projection starts at zero, so the untrained model predicts ε̂ = 0 (the prior mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from earthcast.layers.blocks import PatchMerge, PositionEmbedding, Upsample
from earthcast.models.prediff.layers import (
    EarthformerLevel,
    TimestepEmbedding,
    as_pair,
    with_observation_channel,
)


class EarthformerUNet(nn.Module):
    def __init__(self, latent_channels: int, in_len: int, out_len: int, latent_hw: int | Sequence[int],
                 base_units: int = 256, depth: Sequence[int] = (4, 4), num_heads: int = 4,
                 self_pattern: str = "axial", time_embed_mult: int = 4, norm_groups: int = 32,
                 dropout: float = 0.0, attn_drop: float = 0.1, proj_drop: float = 0.1, ffn_drop: float = 0.1,
                 use_relative_pos: bool = True, checkpoint_level: int = 0):
        super().__init__()
        h, w = as_pair(latent_hw)
        self.in_len, self.out_len, self.latent_channels = in_len, out_len, latent_channels
        length = in_len + out_len
        embed_dim = time_embed_mult * base_units
        common = dict(num_heads=num_heads, pattern=self_pattern, groups=norm_groups, dropout=dropout,
                      attn_drop=attn_drop, proj_drop=proj_drop, ffn_drop=ffn_drop,
                      use_relative_pos=use_relative_pos, checkpoint_level=checkpoint_level)
        self.time_embed = TimestepEmbedding(base_units, embed_dim)
        self.proj_in = nn.Linear(latent_channels + 1, base_units)
        self.pos_embed = PositionEmbedding(base_units, length, h, w)
        top, bottom = (length, h, w), (length, -(-h // 2), -(-w // 2))
        self.down_top = EarthformerLevel(base_units, top, int(depth[0]), embed_dim, **common)
        self.merge = PatchMerge(base_units, 2 * base_units, (1, 2, 2))
        self.down_bottom = EarthformerLevel(2 * base_units, bottom, int(depth[1]), embed_dim, **common)
        self.up_bottom = EarthformerLevel(2 * base_units, bottom, int(depth[1]), embed_dim, **common)
        self.upsample = Upsample(2 * base_units, base_units, (h, w))
        self.up_top = EarthformerLevel(base_units, top, int(depth[0]), embed_dim, **common)
        self.norm_out = nn.LayerNorm(base_units)
        self.proj_out = nn.Linear(base_units, latent_channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        embedding = self.time_embed(t)
        x = self.pos_embed(self.proj_in(with_observation_channel(context, z_t)))
        skip = self.down_top(x, embedding)
        x = self.down_bottom(self.merge(skip), embedding)
        x = self.up_bottom(x, embedding)
        x = self.up_top(self.upsample(x) + skip, embedding)
        return self.proj_out(self.norm_out(x[:, self.in_len:]))


def build_unet(cfg: Mapping, latent_channels: int, in_len: int, out_len: int,
               latent_hw: tuple[int, int]) -> EarthformerUNet:
    keys = ("base_units", "depth", "num_heads", "self_pattern", "time_embed_mult", "norm_groups", "dropout",
            "attn_drop", "proj_drop", "ffn_drop", "use_relative_pos", "checkpoint_level")
    options = {key: cfg[key] for key in keys if key in cfg}
    return EarthformerUNet(latent_channels, in_len, out_len, latent_hw, **options)
