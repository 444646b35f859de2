"""Earthformer building blocks: FFN, stacked cuboid self-/cross-attention blocks, position embedding,
patch merging and upsampling between hierarchy levels. All tensors are channels-last (B, T, H, W, C)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from earthcast.layers.attention import CuboidCrossAttention, CuboidSelfAttention, norm_layer
from earthcast.layers.cuboid import CuboidLayer, Size3, pad_grid
from earthcast.layers.dropout import Dropout
from earthcast.layers.init import init_conv, init_embedding, init_linear, zero_linear
from earthcast.layers.patterns import CrossLayer


def activation(name: str) -> nn.Module:
    layers = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU, "identity": nn.Identity,
              "leaky": lambda: nn.LeakyReLU(0.1, inplace=True)}
    if name not in layers:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(layers)}")
    return layers[name]()


class FeedForward(nn.Module):
    """Pre-norm position-wise FFN with its residual: x + drop(W2·drop(act(W1·norm(x)))); gated variant
    act(W_gate·h) ⊙ W1·h (GLU-style). `zero_init_out` starts W2 at zero (the block starts as the identity)."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu", gated: bool = False, dropout: float = 0.0,
                 norm: str = "layer_norm", zero_init_out: bool = False):
        super().__init__()
        self.norm = norm_layer(norm, dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.gate = nn.Linear(dim, hidden) if gated else None
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = Dropout(dropout)
        for layer in (self.fc1, self.gate, self.fc2):
            init_linear(layer)
        if zero_init_out:
            zero_linear(self.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        h = self.act(self.gate(h)) * self.fc1(h) if self.gate is not None else self.act(self.fc1(h))
        return x + self.drop(self.fc2(self.drop(h)))


def _maybe_checkpoint(module: nn.Module, enabled: bool, *args):
    """Run `module`, recomputing its activations in backward when `enabled` (memory for compute)."""
    if enabled and module.training and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


class SelfAttentionBlock(nn.Module):
    """Cuboid self-attention layers of one pattern, each followed by an FFN (inter-FFN) or one FFN at the end.

    With global vectors every attention layer also returns an update for them; they get their own FFN when
    `global_ffn`. checkpoint_level 1 recomputes the FFNs in backward, 2 the attention layers as well.
    `zero_init_residual` starts every residual branch (attention projection, FFN output) at zero, so the block
    starts as the identity (PreDiff's reference initialisation; Earthformer's keeps them random)."""

    def __init__(self, dim: int, num_heads: int, layers: Sequence[CuboidLayer], *, use_inter_ffn: bool = True,
                 ffn_activation: str = "gelu", gated_ffn: bool = False, ffn_drop: float = 0.0,
                 norm: str = "layer_norm", use_global_vectors: bool = False, global_ffn: bool = False,
                 global_dim_ratio: int = 1, checkpoint_level: int = 0, zero_init_residual: bool = False,
                 **attn_kwargs):
        super().__init__()
        self.use_inter_ffn, self.checkpoint_level = use_inter_ffn, checkpoint_level
        self.attn = nn.ModuleList(
            CuboidSelfAttention(dim, num_heads, layer, norm=norm, use_global_vectors=use_global_vectors,
                                global_dim_ratio=global_dim_ratio, zero_init_proj=zero_init_residual,
                                **attn_kwargs)
            for layer in layers
        )
        num_ffn = len(layers) if use_inter_ffn else 1
        ffn = dict(act=ffn_activation, gated=gated_ffn, dropout=ffn_drop, norm=norm,
                   zero_init_out=zero_init_residual)
        self.ffn = nn.ModuleList(FeedForward(dim, 4 * dim, **ffn) for _ in range(num_ffn))
        global_dim = global_dim_ratio * dim
        self.global_ffn = (
            nn.ModuleList(FeedForward(global_dim, 4 * global_dim, **ffn) for _ in range(num_ffn))
            if use_global_vectors and global_ffn else None
        )

    def _ffn(self, i: int, x, g):
        x = _maybe_checkpoint(self.ffn[i], self.checkpoint_level >= 1, x)
        if g is not None and self.global_ffn is not None:
            g = _maybe_checkpoint(self.global_ffn[i], self.checkpoint_level >= 1, g)
        return x, g

    def forward(self, x: torch.Tensor, global_vectors: torch.Tensor | None = None):
        g = global_vectors
        for i, attn in enumerate(self.attn):
            if g is None:
                x = x + _maybe_checkpoint(attn, self.checkpoint_level >= 2, x)
            else:
                dx, dg = _maybe_checkpoint(attn, self.checkpoint_level >= 2, x, g)
                x, g = x + dx, g + dg
            if self.use_inter_ffn:
                x, g = self._ffn(i, x, g)
        if not self.use_inter_ffn:
            x, g = self._ffn(0, x, g)
        return x if global_vectors is None else (x, g)


class CrossAttentionBlock(nn.Module):
    """Cuboid cross-attention layers of one pattern from the decoder grid to the encoder memory + FFNs."""

    def __init__(self, dim: int, num_heads: int, layers: Sequence[CrossLayer], max_temporal_relative: int, *,
                 use_inter_ffn: bool = True, ffn_activation: str = "gelu", gated_ffn: bool = False,
                 ffn_drop: float = 0.0, norm: str = "layer_norm", checkpoint_level: int = 0, **attn_kwargs):
        super().__init__()
        self.use_inter_ffn, self.checkpoint_level = use_inter_ffn, checkpoint_level
        self.attn = nn.ModuleList(
            CuboidCrossAttention(dim, num_heads, layer, max_temporal_relative, norm=norm, **attn_kwargs)
            for layer in layers
        )
        num_ffn = len(layers) if use_inter_ffn else 1
        self.ffn = nn.ModuleList(
            FeedForward(dim, 4 * dim, ffn_activation, gated_ffn, ffn_drop, norm) for _ in range(num_ffn)
        )

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mem_global_vectors: torch.Tensor | None = None):
        for i, attn in enumerate(self.attn):
            x = x + _maybe_checkpoint(attn, self.checkpoint_level >= 2, x, mem, mem_global_vectors)
            if self.use_inter_ffn:
                x = _maybe_checkpoint(self.ffn[i], self.checkpoint_level >= 1, x)
        if not self.use_inter_ffn:
            x = _maybe_checkpoint(self.ffn[0], self.checkpoint_level >= 1, x)
        return x


class PositionEmbedding(nn.Module):
    """Learned absolute position embedding, 't+h+w' (three tables summed) or 't+hw' (time + pixel)."""

    def __init__(self, dim: int, max_t: int, max_h: int, max_w: int, kind: str = "t+h+w"):
        super().__init__()
        if kind not in ("t+h+w", "t+hw"):
            raise ValueError(f"pos_embed_type must be 't+h+w' or 't+hw', got {kind!r}")
        self.kind, self.max_w = kind, max_w
        self.t = nn.Embedding(max_t, dim)
        if kind == "t+h+w":
            self.h, self.w = nn.Embedding(max_h, dim), nn.Embedding(max_w, dim)
        else:
            self.hw = nn.Embedding(max_h * max_w, dim)
        for table in self.children():
            init_embedding(table)

    def embedding(self, t: int, h: int, w: int) -> torch.Tensor:
        """(T, H, W, C) embedding of a grid no larger than the one it was built for."""
        if self.kind == "t+h+w":
            return (self.t.weight[:t, None, None] + self.h.weight[None, :h, None]
                    + self.w.weight[None, None, :w])
        pixel = self.hw.weight.view(-1, self.max_w, self.hw.embedding_dim)[:h, :w]
        return self.t.weight[:t, None, None] + pixel[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embedding(*x.shape[1:4])


class PatchMerge(nn.Module):
    """Space-time patch merging (Swin): concatenate each (dt, dh, dw) patch's features, norm, project.

    Every axis, time included, is padded at the end to a multiple of the patch (the reference's
    `pad_h or pad_h or pad_w` test skipped the time axis, and then failed to reshape). The reference's
    Earthformer uses LayerNorm here whatever its `norm_layer`, so callers building it leave `norm` alone."""

    def __init__(self, dim: int, out_dim: int, downsample: Size3 = (1, 2, 2), norm: str = "layer_norm",
                 padding_type: str = "zeros"):
        super().__init__()
        self.downsample, self.padding_type, self.out_dim = tuple(downsample), padding_type, out_dim
        patch = downsample[0] * downsample[1] * downsample[2]
        self.norm = norm_layer(norm, patch * dim)
        self.reduction = nn.Linear(patch * dim, out_dim, bias=False)
        init_linear(self.reduction)

    def out_shape(self, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        t, h, w, _ = shape
        dt, dh, dw = self.downsample
        return -(-t // dt), -(-h // dh), -(-w // dw), self.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, t, h, w, c = x.shape
        dt, dh, dw = self.downsample
        x = pad_grid(x, ((-t) % dt, (-h) % dh, (-w) % dw), self.padding_type)
        t, h, w = x.shape[1:4]
        x = x.view(batch, t // dt, dt, h // dh, dh, w // dw, dw, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        x = x.reshape(batch, t // dt, h // dh, w // dw, dt * dh * dw * c)
        return self.reduction(self.norm(x))


def frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, C) → (B·T, C, H, W) as a channels-last view: no copy, and convolutions run in NHWC."""
    return x.flatten(0, 1).permute(0, 3, 1, 2)


def unframes(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of `frames`: a view again as long as the convolution kept the channels-last layout."""
    return x.permute(0, 2, 3, 1).unflatten(0, (batch, -1))


def _phase_taps(scale: int) -> torch.Tensor:
    """(scale, 2, 3) 0/1 matrix of nearest-×scale upsampling followed by a 3-tap kernel, per output phase.

    Output row scale·i + r reads upsampled rows scale·i + r + dy (dy = −1, 0, 1), i.e. source rows
    i + ⌊(r + dy)/scale⌋: rows (i−1, i) for r = 0 and (i, i+1) otherwise. The phases are listed in the order
    pixel_shuffle needs (see `Upsample`): position p holds phase r = 0 for p = scale−1, else r = p + 1."""
    taps = torch.zeros(scale, 2, 3)
    for p in range(scale):
        r = 0 if p == scale - 1 else p + 1
        first_row = -1 if r == 0 else 0
        for dy in (-1, 0, 1):
            taps[p, (r + dy) // scale - first_row, dy + 1] = 1
    return taps


class Upsample(nn.Module):
    """Nearest-neighbour upsampling of every frame to `target_hw`, then a 3×3 convolution.

    For an integer factor s ≥ 2 both steps fold into one 2×2 convolution at the low resolution with s²
    output groups, one per sub-pixel phase, whose kernels are sums of the 3×3 taps: the same function and
    parameters for 4/9 of the multiply-adds. With zero padding 1 the folded convolution yields (h+1)×(w+1)
    positions; phase 0 needs rows i (its window starts one row up), the others rows i+1. Listing phase 0 last
    makes the pixel shuffle put every phase at the right place shifted by s−1, so one crop finishes the job.

    `default_init` keeps PyTorch's initialisation of the convolution (PreDiff's reference) instead of
    Earthformer's."""

    def __init__(self, dim: int, out_dim: int, target_hw: tuple[int, int], kernel_size: int = 3,
                 default_init: bool = False):
        super().__init__()
        self.target_hw = tuple(target_hw)
        self.conv = nn.Conv2d(dim, out_dim, kernel_size, padding=kernel_size // 2)
        if not default_init:
            init_conv(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = frames(x)
        (h, w), (th, tw) = y.shape[-2:], self.target_hw
        if (h, w) == (th, tw):
            return unframes(self.conv(y), x.shape[0])
        scale = th // h
        if self.conv.kernel_size == (3, 3) and scale >= 2 and (th, tw) == (scale * h, scale * w):
            return unframes(self._folded(y, scale), x.shape[0]).contiguous()
        return unframes(self.conv(F.interpolate(y, size=self.target_hw, mode="nearest")), x.shape[0])

    def _folded(self, y: torch.Tensor, s: int) -> torch.Tensor:
        """(N, C, h, w) → (N, C_out, s·h, s·w), a cropped view."""
        weight, bias = self.conv.weight, self.conv.bias
        taps = _phase_taps(s).to(weight)
        # (phase_y, phase_x, C_out, C_in, 2, 2): phase-major output channels, so that in the channels-last
        # result every (pixel, phase) holds C_out contiguous values
        folded = torch.einsum("yad,xbe,oide->yxoiab", taps, taps, weight).flatten(0, 2)
        z = F.conv2d(y, folded, None if bias is None else bias.repeat(s * s), padding=1)
        # pixel shuffle written out on that layout, (n, h', w', s, s, c) → (n, h', s, w', s, c): one copy of
        # contiguous C_out runs each way (F.pixel_shuffle's backward went through NCHW and took ~3× longer)
        n, _, hp, wp = z.shape
        c, (h, w) = weight.shape[0], y.shape[-2:]
        z = z.permute(0, 2, 3, 1).unflatten(-1, (s, s, c)).permute(0, 1, 3, 2, 4, 5).reshape(n, hp * s, wp * s, c)
        return z[:, s - 1 : s - 1 + s * h, s - 1 : s - 1 + s * w].permute(0, 3, 1, 2)
