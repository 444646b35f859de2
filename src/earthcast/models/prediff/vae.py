"""Frame-wise KL autoencoder of PreDiff (stage 1), as released (Gao et al., NeurIPS 2023; the first-stage
`AutoencoderKL` of github.com/gaozhihan/PreDiff, the latent-diffusion VAE of Rombach et al., 2022, in the
diffusers layout).

Each frame is encoded on its own: (B, T, H, W, C) → (B, T, H/f, W/f, C_z) with f = 2^(levels − 1).
  Encoder  3×3 conv → per level `blocks_per_level` residual blocks, then a stride-2 3×3 conv (all but the
           last level; the frame is padded by one row and column at the bottom/right) → mid block
           [residual, single-head spatial attention, residual] → GroupNorm, SiLU, 3×3 conv to 2·C_z.
  Latent   a 1×1 conv mixes (mean, log σ²) before they are split; log σ² is clamped to [−30, 20].
  Decoder  1×1 conv on z → 3×3 conv → mid block → per level (deepest first) `blocks_per_level + 1` residual
           blocks, then nearest ×2 upsampling + 3×3 conv (all but the last) → GroupNorm, SiLU, 3×3 conv.
GroupNorm (ε = 1e-6) everywhere, PyTorch's default initialisation. SEVIR-LR at paper scale: 128×128 → 16×16×64
with channels [128, 256, 512, 512] and 2 blocks per level (configs/model/prediff_vae_sevirlr.yaml).

`PatchDiscriminator` is the optional adversarial critic (PatchGAN, Isola et al., 2017) scoring overlapping
patches of single frames, as the reference's latent-diffusion loss builds it: BatchNorm (published) or GroupNorm
(`norm: group`, ours: no statistic shared across the batch), convolutions initialised N(0, 0.02) and norm
weights N(1, 0.02).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.layers.blocks import frames, unframes
from earthcast.models.prediff.layers import ResidualBlock, group_norm

VAE_EPS = 1e-6  # the GroupNorm ε of every VAE norm


class DiagonalGaussian:
    """N(mean, exp(logvar)) per latent element, from the encoder's moments (channels-last, mean first);
    log-variance clamped to [−30, 20] as in the reference."""

    def __init__(self, moments: torch.Tensor):
        self.moments = moments
        self.mean, logvar = moments.chunk(2, dim=-1)
        self.logvar = logvar.clamp(-30.0, 20.0)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + (0.5 * self.logvar).exp() * noise

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) summed over each sample's latent elements → (B,)."""
        kl = 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(dim=1)


class FrameAttention(nn.Module):
    """Single-head self-attention over the pixels of a frame, with its residual (the mid block's)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups, VAE_EPS)
        self.query, self.key, self.value = (nn.Linear(channels, channels) for _ in range(3))
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (N, HW, C)
        out = F.scaled_dot_product_attention(self.query(tokens), self.key(tokens), self.value(tokens))
        return x + self.proj(out).transpose(1, 2).reshape(n, c, h, w)


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, dropout: float, attention: bool):
        super().__init__()
        self.res1 = ResidualBlock(channels, channels, groups=groups, eps=VAE_EPS, dropout=dropout)
        self.attn = FrameAttention(channels, groups) if attention else nn.Identity()
        self.res2 = ResidualBlock(channels, channels, groups=groups, eps=VAE_EPS, dropout=dropout)

    def forward(self, x):
        return self.res2(self.attn(self.res1(x)))


def _level(in_channels: int, out_channels: int, blocks: int, groups: int, dropout: float) -> nn.Module:
    """`blocks` residual blocks, the first changing the width to `out_channels`."""
    level = nn.Module()
    level.blocks = nn.ModuleList(
        ResidualBlock(in_channels if i == 0 else out_channels, out_channels, groups=groups, eps=VAE_EPS,
                      dropout=dropout)
        for i in range(blocks))
    return level


class Encoder(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], blocks_per_level: int, latent_channels: int,
                 groups: int, dropout: float, mid_attention: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i, out in enumerate(channels):
            level = _level(channels[max(i - 1, 0)], out, blocks_per_level, groups, dropout)
            # stride-2 conv after right/bottom padding: exact halving of even sizes
            level.down = nn.Conv2d(out, out, 3, stride=2) if i < len(channels) - 1 else None
            self.levels.append(level)
        self.mid = MidBlock(channels[-1], groups, dropout, mid_attention)
        self.norm_out = group_norm(channels[-1], groups, VAE_EPS)
        self.conv_out = nn.Conv2d(channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            for block in level.blocks:
                h = block(h)
            if level.down is not None:
                h = level.down(F.pad(h, (0, 1, 0, 1)))
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, out_channels: int, channels: Sequence[int], blocks_per_level: int, latent_channels: int,
                 groups: int, dropout: float, mid_attention: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(latent_channels, channels[-1], 3, padding=1)
        self.mid = MidBlock(channels[-1], groups, dropout, mid_attention)
        self.levels = nn.ModuleList()
        widths = list(reversed(channels))
        for i, out in enumerate(widths):
            level = _level(widths[max(i - 1, 0)], out, blocks_per_level + 1, groups, dropout)
            level.up = nn.Conv2d(out, out, 3, padding=1) if i < len(widths) - 1 else None
            self.levels.append(level)
        self.norm_out = group_norm(channels[0], groups, VAE_EPS)
        self.conv_out = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            for block in level.blocks:
                h = block(h)
            if level.up is not None:
                h = level.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class FrameAutoencoder(nn.Module):
    """KL autoencoder applied frame by frame to channels-last sequences."""

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (128, 256, 512, 512),
                 blocks_per_level: int = 2, latent_channels: int = 64, norm_groups: int = 32,
                 dropout: float = 0.0, mid_attention: bool = True):
        super().__init__()
        channels = [int(c) for c in channels]
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.encoder = Encoder(in_channels, channels, blocks_per_level, latent_channels, norm_groups, dropout,
                               mid_attention)
        # 1×1 convs around the latent (LDM's quant_conv / post_quant_conv): the latent gets its own mixing
        self.to_moments = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.from_latent = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = Decoder(in_channels, channels, blocks_per_level, latent_channels, norm_groups, dropout,
                               mid_attention)

    def latent_shape(self, frame_hw: tuple[int, int]) -> tuple[int, int, int]:
        f = self.downsample_factor
        return frame_hw[0] // f, frame_hw[1] // f, self.latent_channels

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """(B, T, H, W, C) → posterior over (B, T, H/f, W/f, C_z)."""
        f = self.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"frame size {tuple(x.shape[2:4])} is not a multiple of the VAE's downsampling {f}")
        moments = self.to_moments(self.encoder(frames(x).contiguous()))
        return DiagonalGaussian(unframes(moments, x.shape[0]))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, h, w, C_z) → (B, T, h·f, w·f, C)."""
        out = self.decoder(self.from_latent(frames(z).contiguous()))
        return unframes(out, z.shape[0])

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        z = posterior.sample() if sample else posterior.mean
        return self.decode(z), posterior


class PatchDiscriminator(nn.Module):
    """PatchGAN critic on single frames: strided 4×4 convs, a norm, LeakyReLU → a logit per patch."""

    def __init__(self, in_channels: int = 1, channels: int = 64, layers: int = 3, norm: str = "batch",
                 norm_groups: int = 32):
        super().__init__()
        if norm not in ("batch", "group"):
            raise ValueError(f"discriminator norm {norm!r}: use batch or group")
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            normalise = nn.BatchNorm2d(out) if norm == "batch" else group_norm(out, norm_groups, 1e-6)
            blocks += [nn.Conv2d(width, out, 4, stride, 1, bias=False), normalise, nn.LeakyReLU(0.2)]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)
        for module in self.net:  # the pix2pix initialisation the reference applies
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C) → patch logits (B·T, 1, h, w)."""
        return self.net(frames(x).contiguous())


def build_autoencoder(cfg: Mapping) -> FrameAutoencoder:
    """From cfg.model.autoencoder (configs/model/prediff_vae.yaml)."""
    return FrameAutoencoder(in_channels=int(cfg["in_channels"]), channels=list(cfg["channels"]),
                            blocks_per_level=int(cfg["blocks_per_level"]), latent_channels=int(cfg["latent_channels"]),
                            norm_groups=int(cfg["norm_groups"]), dropout=float(cfg["dropout"]),
                            mid_attention=bool(cfg["mid_attention"]))


def build_discriminator(cfg: Mapping, in_channels: int = 1) -> PatchDiscriminator | None:
    """From cfg.model.discriminator; None when it is not enabled."""
    if not cfg["enabled"]:
        return None
    return PatchDiscriminator(in_channels, int(cfg["channels"]), int(cfg["layers"]), str(cfg["norm"]),
                              int(cfg["norm_groups"]))
