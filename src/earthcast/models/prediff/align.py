"""Knowledge-alignment network of PreDiff (stage 3), as released (Gao et al., NeurIPS 2023, Sec. 3.2;
`NoisyCuboidTransformerEncoder` of github.com/gaozhihan/PreDiff).

It estimates a constraint statistic F of the *final* forecast (e.g. each frame's average intensity) from the
noisy future latents z_t at diffusion step t. Reading top-down:
  1. `proj_in`, a 3-D residual block, maps the latent channels to base_units; a learned position embedding
     is added; the timestep gets the denoiser's embedding.
  2. Down: per level (patch merging ×2 in space, ×2 width between levels) `depth` × [the level's
     time-embedded 3-D residual block → an axial cuboid self-attention block] (the denoiser's down path).
  3. Readout per future frame: GroupNorm, SiLU, then attention pooling (CLIP-style): the frame's mean token
     (plus a learned position embedding on every token) queries all of the frame's tokens, and a projection
     of the pooled vector gives the frame's estimate.
The published network ignores the context; `use_context` (ours) makes it the U_φ(z_t, t, y) of the paper's
equation: the context latents go first along time with the observation-indicator channel, exactly as in the
denoiser, and the readout keeps the future frames. Only GroupNorm/LayerNorm: each sample's estimate depends
on that sample alone (needed for per-sample guidance).

forward(z_t, t, context) → (B, K): per frame (`per_frame`, K = T_out) or their mean (K = 1), which is how
guidance uses a per-frame network for a statistic over the whole forecast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.models.prediff.layers import NoisyLatentEncoder, group_norm, with_observation_channel


class AttentionPool(nn.Module):
    """(N, C, L) tokens → (N, out) through one attention query: the tokens' mean (CLIP's attention pooling).

    The mean token is prepended, a learned position embedding is added to all L + 1 tokens, and the query
    of the mean token attends (multi-head) to all of them. 1×1 Conv1d projections: the released weights'
    layout."""

    def __init__(self, channels: int, num_tokens: int, num_heads: int, out_channels: int):
        super().__init__()
        self.num_heads = num_heads
        self.position = nn.Parameter(torch.randn(channels, num_tokens + 1) / channels**0.5)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = nn.Conv1d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.position.to(x.dtype)
        q, k, v = self.qkv(x).unflatten(1, (3, self.num_heads, -1)).unbind(1)  # each (N, heads, d, L + 1)
        # only the mean token's query is read out: attention for that one query
        pooled = F.scaled_dot_product_attention(q[..., :1].transpose(-2, -1), k.transpose(-2, -1),
                                                v.transpose(-2, -1))  # (N, heads, 1, d)
        return self.proj(pooled.transpose(-2, -1).flatten(1, 2))[..., 0]


class AlignmentNet(NoisyLatentEncoder):
    def __init__(self, latent_channels: int, in_len: int, out_len: int, latent_hw: int | Sequence[int],
                 per_frame: bool = False, base_units: int = 128, depth: Sequence[int] = (1, 1),
                 num_heads: int = 4, self_pattern: str = "axial", time_embed_mult: int = 4,
                 norm_groups: int = 32, dropout: float = 0.0, attn_drop: float = 0.1, proj_drop: float = 0.1,
                 ffn_drop: float = 0.1, use_relative_pos: bool = True, use_context: bool = False):
        # with the context: its frames first along time, plus the observation-indicator channel
        super().__init__(latent_channels + 1 if use_context else latent_channels,
                         in_len + out_len if use_context else out_len, latent_hw, base_units, depth,
                         num_heads=num_heads, self_pattern=self_pattern, time_embed_mult=time_embed_mult,
                         norm_groups=norm_groups, dropout=dropout, attn_drop=attn_drop, proj_drop=proj_drop,
                         ffn_drop=ffn_drop, use_relative_pos=use_relative_pos)
        self.in_len, self.out_len, self.per_frame = in_len, out_len, bool(per_frame)
        self.use_context = bool(use_context)
        self.num_outputs = out_len if self.per_frame else 1
        _, h, w, width = self.shapes[-1]
        self.readout_norm = group_norm(width, min(width, norm_groups))
        self.readout = AttentionPool(width, h * w, num_heads, 1)

    def frame_estimates(self, z_t: torch.Tensor, t: torch.Tensor,
                        context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T_out, 1): the estimate for each future frame (the released network's output)."""
        levels, _ = self.down_path(with_observation_channel(context, z_t) if self.use_context else z_t, t)
        tokens = levels[-1][:, -self.out_len:].flatten(0, 1).flatten(1, 2).transpose(1, 2)  # (B·T_out, C, h·w)
        estimates = self.readout(F.silu(self.readout_norm(tokens)))
        return estimates.unflatten(0, (z_t.shape[0], self.out_len))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """→ (B, K) estimates of the (standardised) statistic."""
        estimates = self.frame_estimates(z_t, t, context)[..., 0]
        return estimates if self.per_frame else estimates.mean(dim=1, keepdim=True)


ALIGNMENT_KEYS = ("base_units", "depth", "num_heads", "self_pattern", "time_embed_mult", "norm_groups", "dropout",
                  "attn_drop", "proj_drop", "ffn_drop", "use_relative_pos", "use_context")


def build_alignment_net(cfg: Mapping, latent_channels: int, in_len: int, out_len: int,
                        latent_hw: tuple[int, int], per_frame: bool) -> AlignmentNet:
    """The alignment network of a `model.network` config (configs/model/prediff_align*.yaml)."""
    options = {key: cfg[key] for key in ALIGNMENT_KEYS if key in cfg}
    return AlignmentNet(latent_channels, in_len, out_len, latent_hw, per_frame=per_frame, **options)
