"""Earthformer-UNet: the latent denoiser of PreDiff (stage 2), as the authors built it (Gao et al., NeurIPS
2023, Sec. 3 and App. B; `CuboidTransformerUNet` of github.com/gaozhihan/PreDiff).

    input   noisy future latents z_t (B, T_out, h, w, C), timestep t (B,), context latents (B, T_in, h, w, C)
    output  the prediction for the future frames (ε, v or z_0, as trained), (B, T_out, h, w, C)

Reading top-down:
  1. The context goes first along time, then z_t, plus a channel marking the observed frames (1) and the
     frames to forecast (0): (B, T_in + T_out, h, w, C + 1).
  2. `proj_in`, a 3-D residual block (3×3×3 convolutions, no timestep) maps C + 1 channels to base_units;
     a learned position embedding (t + h + w) is added.
  3. The timestep t (as a float) gets sinusoidal features and an MLP: one embedding for every level.
  4. Down: per level (patch merging ×2 in space, ×2 width between levels) `depth` × [the level's
     time-embedded 3-D residual block → an axial cuboid self-attention block]; each level but the deepest
     keeps its output for the skip connection.
  5. Up: the deepest level again with its own blocks, then per level upsampling (nearest + 3×3 convolution),
     the skip added, `depth` × [residual block → attention block].
  6. The last T_out frames go through a linear projection to C channels.
Every residual branch of the attention blocks, the residual blocks' last convolutions and the output
projection start at zero (the reference's initialisation), so the untrained denoiser predicts ε̂ = 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from earthcast.layers.blocks import Upsample
from earthcast.models.prediff.layers import NoisyLatentEncoder, with_observation_channel


class EarthformerUNet(NoisyLatentEncoder):
    def __init__(self, latent_channels: int, in_len: int, out_len: int, latent_hw: int | Sequence[int],
                 base_units: int = 256, depth: Sequence[int] = (4, 4), num_heads: int = 4,
                 self_pattern: str = "axial", time_embed_mult: int = 4, norm_groups: int = 32,
                 dropout: float = 0.0, attn_drop: float = 0.1, proj_drop: float = 0.1, ffn_drop: float = 0.1,
                 use_relative_pos: bool = True, checkpoint_level: int = 0):
        super().__init__(latent_channels + 1, in_len + out_len, latent_hw, base_units, depth, num_heads=num_heads,
                         self_pattern=self_pattern, time_embed_mult=time_embed_mult, norm_groups=norm_groups,
                         dropout=dropout, attn_drop=attn_drop, proj_drop=proj_drop, ffn_drop=ffn_drop,
                         use_relative_pos=use_relative_pos, checkpoint_level=checkpoint_level)
        self.in_len, self.out_len, self.latent_channels = in_len, out_len, latent_channels
        self.up = self.levels(depth)
        self.upsample = nn.ModuleList(Upsample(b[3], a[3], a[1:3], default_init=True)
                                      for a, b in zip(self.shapes, self.shapes[1:]))
        self.proj_out = nn.Linear(base_units, latent_channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        skips, embedding = self.down_path(with_observation_channel(context, z_t), t)
        x = skips[-1]
        for i in reversed(range(len(self.up))):
            if i < len(self.up) - 1:
                x = x + skips[i]
            x = self.up[i](x, embedding)
            if i > 0:
                x = self.upsample[i - 1](x)
        return self.proj_out(x[:, self.in_len:])


DENOISER_KEYS = ("base_units", "depth", "num_heads", "self_pattern", "time_embed_mult", "norm_groups", "dropout",
                 "attn_drop", "proj_drop", "ffn_drop", "use_relative_pos", "checkpoint_level")


def build_denoiser(cfg: Mapping, latent_channels: int, in_len: int, out_len: int,
                   latent_hw: tuple[int, int]) -> EarthformerUNet:
    """The denoiser of a `model.denoiser` config (configs/model/prediff_ldm*.yaml)."""
    options = {key: cfg[key] for key in DENOISER_KEYS if key in cfg}
    return EarthformerUNet(latent_channels, in_len, out_len, latent_hw, **options)


