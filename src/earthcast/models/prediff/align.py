"""Knowledge-alignment network U_φ(z_t, t, y) of PreDiff (stage 3).

It estimates a constraint statistic F(x, y) of the *final* forecast x from the noisy future latents z_t at
diffusion step t and the context latents y. Unlike the reference implementation, the context is part of the
input: it is concatenated with z_t along time (with the observation-indicator channel, exactly as in the
denoiser), so attention along time lets the estimate depend on what was observed.

Body: one Earthformer level at the latent resolution, patch merging, one level at half resolution.
Readout over the future frames' tokens: attention pooling (a learned scoring of tokens, softmax) concatenated
with mean pooling, then an MLP — per future frame (`per_frame`, K = T_out outputs) or over all of them (K = 1).
LayerNorm/GroupNorm only: each sample's output depends on that sample alone (needed for per-sample guidance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from earthcast.layers.blocks import PatchMerge, PositionEmbedding
from earthcast.models.prediff.layers import (
    EarthformerLevel,
    TimestepEmbedding,
    as_pair,
    with_observation_channel,
)


class AlignmentNet(nn.Module):
    def __init__(self, latent_channels: int, in_len: int, out_len: int, latent_hw: int | Sequence[int],
                 per_frame: bool = False, base_units: int = 128, depth: Sequence[int] = (1, 1),
                 num_heads: int = 4, self_pattern: str = "axial", time_embed_mult: int = 4,
                 norm_groups: int = 32, dropout: float = 0.0, attn_drop: float = 0.1, proj_drop: float = 0.1,
                 ffn_drop: float = 0.1, use_relative_pos: bool = True):
        super().__init__()
        h, w = as_pair(latent_hw)
        self.in_len, self.out_len, self.per_frame = in_len, out_len, bool(per_frame)
        self.num_outputs = out_len if self.per_frame else 1
        length = in_len + out_len
        embed_dim = time_embed_mult * base_units
        common = dict(num_heads=num_heads, pattern=self_pattern, groups=norm_groups, dropout=dropout,
                      attn_drop=attn_drop, proj_drop=proj_drop, ffn_drop=ffn_drop,
                      use_relative_pos=use_relative_pos)
        self.time_embed = TimestepEmbedding(base_units, embed_dim)
        self.proj_in = nn.Linear(latent_channels + 1, base_units)
        self.pos_embed = PositionEmbedding(base_units, length, h, w)
        self.top = EarthformerLevel(base_units, (length, h, w), int(depth[0]), embed_dim, **common)
        self.merge = PatchMerge(base_units, 2 * base_units, (1, 2, 2))
        width = 2 * base_units
        self.bottom = EarthformerLevel(width, (length, -(-h // 2), -(-w // 2)), int(depth[1]), embed_dim,
                                       **common)
        self.norm_out = nn.LayerNorm(width)
        self.score = nn.Linear(width, 1)
        self.head = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """→ (B, K) estimates of the (standardised) statistic."""
        embedding = self.time_embed(t)
        x = self.pos_embed(self.proj_in(with_observation_channel(context, z_t)))
        x = self.bottom(self.merge(self.top(x, embedding)), embedding)
        tokens = self.norm_out(x[:, self.in_len:])  # (B, T_out, h', w', D): the forecast's frames
        tokens = tokens.flatten(2, 3) if self.per_frame else tokens.flatten(1, 3).unsqueeze(1)  # (B, K, N, D)
        weights = torch.softmax(self.score(tokens), dim=2)
        pooled = torch.cat([(weights * tokens).sum(dim=2), tokens.mean(dim=2)], dim=-1)
        return self.head(pooled).squeeze(-1)


def build_alignment_net(cfg: Mapping, latent_channels: int, in_len: int, out_len: int,
                        latent_hw: tuple[int, int], per_frame: bool) -> AlignmentNet:
    keys = ("base_units", "depth", "num_heads", "self_pattern", "time_embed_mult", "norm_groups", "dropout",
            "attn_drop", "proj_drop", "ffn_drop", "use_relative_pos")
    options = {key: cfg[key] for key in keys if key in cfg}
    return AlignmentNet(latent_channels, in_len, out_len, latent_hw, per_frame=per_frame, **options)
