"""Cuboid self- and cross-attention with global vectors (Gao et al., 2022, Sec. 3.1–3.2).

Both layers follow the same recipe:
    pre-norm → pad to whole cuboids → cyclic shift → reorder into cuboids → attention inside each cuboid
    (+ learned relative-position bias, + shift-region mask, + padding mask for padding_type='ignore')
    → reorder back → unshift → unpad → projection.
Attention runs through `F.scaled_dot_product_attention` with the bias and mask folded into one additive float
mask, so fused CPU/GPU kernels apply. Masked entries are filled with a large finite negative number for the
compute dtype, so no row (e.g. of a padded query) can turn into NaN under fp16/bf16 autocast.

Global vectors (Sec. 3.2): each local query attends to [its cuboid's keys ; the N global keys] in one softmax;
each global vector attends to every real token (and, optionally, to the global vectors). With separate
projections for the two kinds of query, one softmax still covers both key sets: queries are concatenated
along the feature axis, [q | q_g], and keys are zero-padded to match, [k | 0] and [0 | k_g], so
[q | q_g]·[k | 0] = q·k and [q | q_g]·[0 | k_g] = q_g·k_g.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.layers.cuboid import (
    PADDING_TYPES,
    CuboidLayer,
    Size3,
    cross_attention_mask,
    fit_cuboid,
    from_cuboids,
    pad_grid,
    padded,
    relative_position_index,
    self_attention_mask,
    to_cuboids,
    token_is_real,
    unpad_grid,
)
from earthcast.layers.dropout import Dropout, dropout
from earthcast.layers.init import init_linear, zero_linear
from earthcast.layers.patterns import CrossLayer


def mask_fill(dtype: torch.dtype) -> float:
    """Additive mask value for disallowed keys: half the dtype's most negative number, leaving headroom for
    the attention score added on top (fp16 would overflow to -inf at finfo.min), yet exp() of it is 0."""
    return torch.finfo(dtype).min / 2


def attend(q, k, v, mask: torch.Tensor | None, dropout_p: float, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask)·v over the last two axes; tests patch this to inspect the weights.

    Fused SDPA kernels run on GPU and for CPU inference. CPU training has no fused kernel that gives the
    bias its gradient, so SDPA would take its generic fallback (which adds NaN guards over the whole score
    tensor); the same three steps written out directly are ~30% faster there."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or getattr(mask, "requires_grad", False)):
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)
        if mask is not None:
            scores = scores + mask
        weights = torch.softmax(scores, dim=-1)
        if dropout_p > 0:
            weights = dropout(weights, dropout_p)
        return torch.matmul(weights, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, NeurIPS 2019) as the Earthformer reference computes it:
    x / (‖x‖₂/√d + eps) · scale, with eps added to the RMS rather than inside the square root."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.norm(2, dim=-1, keepdim=True) * x.shape[-1] ** -0.5
        return self.scale * (x / (rms + self.eps))


def norm_layer(kind: str, dim: int) -> nn.Module:
    if kind == "layer_norm":
        return nn.LayerNorm(dim)
    if kind == "rms_norm":
        return RMSNorm(dim)
    raise ValueError(f"norm_layer must be 'layer_norm' or 'rms_norm', got {kind!r}")


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads·d) → (B, heads, N, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _with_zeros(x: torch.Tensor, before: int = 0, after: int = 0) -> torch.Tensor:
    """Zero-pad the feature axis: the key side of the concatenated-query trick (module docstring)."""
    return F.pad(x, (before, after))


class _Geometry(NamedTuple):
    """Everything about a layer's decomposition that depends only on the input shape (computed once)."""

    layer: CuboidLayer  # fitted cuboid of the (query) grid
    pad: Size3
    grid: Size3  # padded grid
    rel_index: torch.Tensor | None  # (Vq, Vk) rows of the bias table
    blocked: torch.Tensor | None  # (num_cuboids, 1, Vq, Vk) True where attention is disallowed
    padding: torch.Tensor | None  # (num_cuboids·V,) True at masked padded tokens (global-vector update)
    mem_layer: CuboidLayer | None = None  # cross attention: the memory's cuboid
    mem_pad: Size3 | None = None


class _CuboidAttentionBase(nn.Module):
    """Shared parts: relative-position bias table, shape-keyed geometry cache, local mask assembly."""

    def __init__(self, dim: int, num_heads: int, table_size: Size3 | None, attn_drop: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.table_size = table_size
        if table_size is not None:
            rows = (2 * table_size[0] - 1) * (2 * table_size[1] - 1) * (2 * table_size[2] - 1)
            self.relative_position_bias = nn.Parameter(torch.zeros(rows, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias, std=0.02)
        self._geometry_cache: dict[tuple, _Geometry] = {}

    def _cached(self, key: tuple, build) -> _Geometry:
        if key not in self._geometry_cache:
            self._geometry_cache[key] = build()
        return self._geometry_cache[key]

    @property
    def dropout_p(self) -> float:
        return self.attn_drop if self.training else 0.0

    def local_mask(self, geo: _Geometry, batch: int, dtype: torch.dtype, extra_keys: int = 0):
        """Additive mask for the local attention, broadcastable to (B·num_cuboids, heads, Vq, Vk + extra):
        relative-position bias, blocked entries set to the fill value, zero for appended global keys."""
        if geo.rel_index is None and geo.blocked is None:
            return None
        if geo.rel_index is not None:
            vq, vk = geo.rel_index.shape
            bias = self.relative_position_bias[geo.rel_index.view(-1)].view(vq, vk, -1).permute(2, 0, 1)
            mask = bias.to(dtype).unsqueeze(0)  # (1, heads, Vq, Vk)
        else:
            mask = torch.zeros((1, 1) + tuple(geo.blocked.shape[-2:]), dtype=dtype, device=geo.blocked.device)
        if geo.blocked is not None:
            # one mask per cuboid: expand over the batch, (B·n, heads, Vq, Vk)
            mask = mask.masked_fill(geo.blocked, mask_fill(dtype))
            mask = mask.expand(batch, *mask.shape[1:]) if mask.shape[0] == 1 else mask.repeat(batch, 1, 1, 1)
        if extra_keys:
            mask = F.pad(mask, (0, extra_keys))
        return mask


class CuboidSelfAttention(_CuboidAttentionBase):
    """Self attention inside cuboids of one `CuboidLayer`, optionally exchanging with N global vectors.

    forward(x (B, T, H, W, C), global_vectors (B, N, Cg) or None) → update for x [, update for the globals];
    the caller adds the residuals."""

    def __init__(self, dim: int, num_heads: int, layer: CuboidLayer, *, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, use_relative_pos: bool = True, use_final_proj: bool = True,
                 padding_type: str = "zeros", norm: str = "layer_norm", use_global_vectors: bool = False,
                 use_global_self_attn: bool = False, separate_global_qkv: bool = False, global_dim_ratio: int = 1,
                 zero_init_proj: bool = False):
        super().__init__(dim, num_heads, tuple(layer.size) if use_relative_pos else None, attn_drop)
        self.zero_init_proj = zero_init_proj
        if global_dim_ratio != 1 and not separate_global_qkv:
            raise ValueError("global_dim_ratio != 1 needs separate_global_qkv")
        if padding_type not in PADDING_TYPES:
            raise ValueError(f"padding_type must be one of {', '.join(PADDING_TYPES)}, got {padding_type!r}")
        self.layer, self.padding_type = layer, padding_type
        self.norm = norm_layer(norm, dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        # without the final projection the reference applies no dropout either
        self.proj = nn.Linear(dim, dim) if use_final_proj else nn.Identity()
        self.proj_drop = Dropout(proj_drop) if use_final_proj else nn.Identity()

        self.use_global_vectors, self.use_global_self_attn = use_global_vectors, use_global_self_attn
        self.separate_global_qkv = separate_global_qkv
        global_dim = global_dim_ratio * dim
        if use_global_vectors:
            self.global_norm = norm_layer(norm, global_dim)
            if separate_global_qkv:
                self.l2g_q = nn.Linear(dim, dim, bias=False)  # local queries towards the globals
                self.l2g_global_kv = nn.Linear(global_dim, 2 * dim, bias=False)  # global keys/values for them
                self.g2l_global_q = nn.Linear(global_dim, dim, bias=False)  # global queries towards the tokens
                self.g2l_k = nn.Linear(dim, dim, bias=False)  # token keys/values for them
                self.g2l_v = nn.Linear(dim, global_dim, bias=False)
                if use_global_self_attn:
                    self.g2g_global_qkv = nn.Linear(global_dim, 3 * global_dim, bias=False)
            else:  # the globals share one projection, the tokens reuse their own q, k, v
                self.global_qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.global_proj = nn.Linear(global_dim, global_dim) if use_final_proj else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        # the reference initialises every projection but global_proj, which keeps PyTorch's default;
        # PreDiff's starts the output projection at zero (`zero_init_proj`)
        for name, layer in self.named_children():
            if name != "global_proj":
                init_linear(layer)
        if self.zero_init_proj:
            zero_linear(self.proj)

    def geometry(self, shape: Size3, device) -> _Geometry:
        def build():
            layer = fit_cuboid(shape, self.layer)
            grid = padded(shape, layer.size)
            masked = self.padding_type == "ignore"
            allowed = self_attention_mask(shape, layer, mask_padding=masked)
            real = token_is_real(shape, layer) if masked else None
            rel = relative_position_index(layer.size, layer.size, self.table_size) if self.table_size else None
            return _Geometry(
                layer, tuple(g - s for g, s in zip(grid, shape)), grid,
                None if rel is None else rel.to(device),
                None if allowed is None else (~allowed).unsqueeze(1).to(device),
                None if real is None else (~real).reshape(-1).to(device),
            )

        return self._cached((tuple(shape), str(device)), build)

    def forward(self, x: torch.Tensor, global_vectors: torch.Tensor | None = None):
        batch, t, h, w, channels = x.shape
        geo = self.geometry((t, h, w), x.device)
        size, strategy, shift = geo.layer
        heads, head_dim = self.num_heads, self.head_dim

        x = pad_grid(self.norm(x), geo.pad, self.padding_type)
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        x = to_cuboids(x, size, strategy)  # (B, n, V, C)
        num_cuboids, volume = x.shape[1:3]
        q, k, v = self.qkv(x).view(batch * num_cuboids, volume, 3, heads, head_dim).permute(2, 0, 3, 1, 4)

        if global_vectors is None:
            out = attend(q, k, v, self.local_mask(geo, batch, q.dtype), self.dropout_p, self.scale)
            new_globals = None
        else:
            g = self.global_norm(global_vectors)
            out, new_globals = self._with_globals(x, q, k, v, g, geo)

        # (B·n, heads, V, d) → (B, n, V, heads, d) → grid → merge heads
        out = out.unflatten(0, (batch, num_cuboids)).transpose(2, 3)
        out = from_cuboids(out, size, strategy, geo.grid).flatten(-2)
        if any(shift):
            out = torch.roll(out, shifts=shift, dims=(1, 2, 3))
        out = unpad_grid(out, (t, h, w), self.padding_type)
        out = self.proj_drop(self.proj(out))
        if new_globals is None:
            return out
        return out, self.proj_drop(self.global_proj(new_globals))

    def _with_globals(self, x, q, k, v, g, geo: _Geometry):
        """Local attention over [cuboid ; globals] and the global vectors' update from all tokens."""
        batch, num_cuboids, volume, _ = x.shape
        num_global, heads, d = g.shape[1], self.num_heads, self.head_dim

        def per_cuboid(t):  # (B, heads, N, e) → (B·n, heads, N, e)
            return t.unsqueeze(1).expand(-1, num_cuboids, -1, -1, -1).flatten(0, 1)

        def all_tokens(t):  # (B·n, heads, V, e) → (B, heads, n·V, e)
            return t.unflatten(0, (batch, num_cuboids)).transpose(1, 2).flatten(2, 3)

        # local → [local ; global]
        if self.separate_global_qkv:
            l2g_q = _heads(self.l2g_q(x).flatten(0, 1), heads)
            g_k, g_v = _heads(self.l2g_global_kv(g), 2 * heads).chunk(2, dim=1)
            local_q = torch.cat([q, l2g_q], dim=-1)
            keys = torch.cat([_with_zeros(k, after=d), per_cuboid(_with_zeros(g_k, before=d))], dim=2)
            g2l_q = _heads(self.g2l_global_q(g), heads)
            token_k = all_tokens(_heads(self.g2l_k(x).flatten(0, 1), heads))
            token_v = all_tokens(_heads(self.g2l_v(x).flatten(0, 1), heads))
        else:
            g_q, g_k, g_v = _heads(self.global_qkv(g), 3 * heads).chunk(3, dim=1)
            local_q, keys = q, torch.cat([k, per_cuboid(g_k)], dim=2)
            g2l_q, token_k, token_v = g_q, all_tokens(k), all_tokens(v)
        values = torch.cat([v, per_cuboid(g_v)], dim=2)
        mask = self.local_mask(geo, batch, q.dtype, extra_keys=num_global)
        out = attend(local_q, keys, values, mask, self.dropout_p, self.scale)

        # global → all real tokens (+ the globals themselves)
        if self.use_global_self_attn:
            if self.separate_global_qkv:
                gg_q, gg_k, gg_v = _heads(self.g2g_global_qkv(g), 3 * heads).chunk(3, dim=1)
                g_query = torch.cat([g2l_q, gg_q], dim=-1)
                g_keys = torch.cat([_with_zeros(token_k, after=gg_k.shape[-1]), _with_zeros(gg_k, before=d)], 2)
                g_values = torch.cat([token_v, gg_v], dim=2)
            else:
                g_query, g_keys, g_values = g2l_q, torch.cat([token_k, g_k], 2), torch.cat([token_v, g_v], 2)
        else:
            g_query, g_keys, g_values = g2l_q, token_k, token_v
        g_mask = None
        if geo.padding is not None:  # padded tokens are no keys for the globals either
            g_mask = torch.zeros(1, g_keys.shape[2], dtype=q.dtype, device=q.device)
            g_mask[0, : geo.padding.numel()].masked_fill_(geo.padding, mask_fill(q.dtype))
        new_globals = attend(g_query, g_keys, g_values, g_mask, self.dropout_p, self.scale)
        return out, new_globals.transpose(1, 2).flatten(2)


class CuboidCrossAttention(_CuboidAttentionBase):
    """Cross attention from the decoder grid x (B, Tx, H, W, C) to the encoder memory (B, Tm, H, W, C).

    Both grids are cut into the same K×K spatial cuboids (and n_temporal temporal ones); each query cuboid
    attends to the memory cuboid at the same place. The memory is padded in time at the front, the query at
    the end. The temporal bias table spans `max_temporal_relative` = T_in + T_out frames and is indexed by
    query frame minus memory frame, both counted within their cuboids (the reference's layout)."""

    def __init__(self, dim: int, num_heads: int, layer: CrossLayer, max_temporal_relative: int, *,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, use_relative_pos: bool = True,
                 padding_type: str = "zeros", norm: str = "layer_norm", last_n_frames: int | None = None,
                 use_global_vectors: bool = False, separate_global_qkv: bool = False, global_dim_ratio: int = 1):
        table = (max_temporal_relative, *layer.cuboid_hw) if use_relative_pos else None
        super().__init__(dim, num_heads, table, attn_drop)
        if global_dim_ratio != 1 and not separate_global_qkv:
            raise ValueError("global_dim_ratio != 1 needs separate_global_qkv")
        if padding_type not in PADDING_TYPES:
            raise ValueError(f"padding_type must be one of {', '.join(PADDING_TYPES)}, got {padding_type!r}")
        self.layer, self.padding_type, self.last_n_frames = layer, padding_type, last_n_frames
        self.norm = norm_layer(norm, dim)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = Dropout(proj_drop)
        self.use_global_vectors, self.separate_global_qkv = use_global_vectors, separate_global_qkv
        if use_global_vectors and separate_global_qkv:
            self.l2g_q = nn.Linear(dim, dim, bias=False)
            self.l2g_global_kv = nn.Linear(global_dim_ratio * dim, 2 * dim, bias=False)
        for layer in self.children():
            init_linear(layer)

    def geometry(self, x_shape: Size3, mem_shape: Size3, device) -> _Geometry:
        def build():
            (tx, h, w), tm = x_shape, mem_shape[0]
            n_temporal = min(self.layer.n_temporal, tx, tm)
            tx_pad, tm_pad = (-tx) % n_temporal, (-tm) % n_temporal
            spatial = CuboidLayer((1, *self.layer.cuboid_hw), self.layer.strategy, (0, *self.layer.shift_hw))
            spatial = fit_cuboid((1, h, w), spatial)
            (bh, bw), (sh, sw) = spatial.size[1:], spatial.shift[1:]
            x_layer = CuboidLayer(((tx + tx_pad) // n_temporal, bh, bw), self.layer.strategy, (0, sh, sw))
            mem_layer = CuboidLayer(((tm + tm_pad) // n_temporal, bh, bw), self.layer.strategy, (0, sh, sw))
            hw_pad = ((-h) % bh, (-w) % bw)
            # n_temporal cuboids along time: the grids are padded to n_temporal whole cuboids, not to a multiple
            # of one cuboid's length
            x_grid = (tx + tx_pad, h + hw_pad[0], w + hw_pad[1])
            mem_grid = (tm + tm_pad, h + hw_pad[0], w + hw_pad[1])
            allowed = cross_attention_mask(x_grid, mem_shape, mem_grid, x_layer, mem_layer, tm_pad,
                                           mask_padding=self.padding_type == "ignore")
            rel = None
            if self.table_size:
                rel = relative_position_index(x_layer.size, mem_layer.size, self.table_size).to(device)
            return _Geometry(
                x_layer, (tx_pad, *hw_pad), x_grid, rel,
                None if allowed is None else (~allowed).unsqueeze(1).to(device), None,
                mem_layer, (tm_pad, *hw_pad),
            )

        return self._cached((tuple(x_shape), tuple(mem_shape), str(device)), build)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mem_global_vectors: torch.Tensor | None = None):
        if self.last_n_frames is not None:
            mem = mem[:, -self.last_n_frames :]
        batch, t, h, w, channels = x.shape
        geo = self.geometry((t, h, w), tuple(mem.shape[1:4]), x.device)
        strategy, shift = geo.layer.strategy, geo.layer.shift
        heads, head_dim = self.num_heads, self.head_dim

        x = pad_grid(self.norm(x), geo.pad, self.padding_type)
        mem = pad_grid(mem, geo.mem_pad, self.padding_type, time_front=True)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[1], -shift[2]), dims=(2, 3))
            mem = torch.roll(mem, shifts=(-shift[1], -shift[2]), dims=(2, 3))
        x = to_cuboids(x, geo.layer.size, strategy)  # (B, n, Vx, C)
        mem = to_cuboids(mem, geo.mem_layer.size, strategy)  # (B, n, Vm, C)
        num_cuboids, volume = x.shape[1:3]
        q = self.q_proj(x).view(batch * num_cuboids, volume, heads, head_dim).transpose(1, 2)
        k, v = self.kv_proj(mem).view(batch * num_cuboids, mem.shape[2], 2, heads, head_dim).permute(2, 0, 3, 1, 4)

        if self.use_global_vectors and mem_global_vectors is not None:
            num_global = mem_global_vectors.shape[1]
            if self.separate_global_qkv:
                g_k, g_v = _heads(self.l2g_global_kv(mem_global_vectors), 2 * heads).chunk(2, dim=1)
                q = torch.cat([q, _heads(self.l2g_q(x).flatten(0, 1), heads)], dim=-1)
                k, g_k = _with_zeros(k, after=head_dim), _with_zeros(g_k, before=head_dim)
            else:
                g_k, g_v = _heads(self.kv_proj(mem_global_vectors), 2 * heads).chunk(2, dim=1)
            expand = lambda t: t.unsqueeze(1).expand(-1, num_cuboids, -1, -1, -1).flatten(0, 1)  # noqa: E731
            k, v = torch.cat([k, expand(g_k)], dim=2), torch.cat([v, expand(g_v)], dim=2)
            mask = self.local_mask(geo, batch, q.dtype, extra_keys=num_global)
        else:
            mask = self.local_mask(geo, batch, q.dtype)
        out = attend(q, k, v, mask, self.dropout_p, self.scale)

        out = out.unflatten(0, (batch, num_cuboids)).transpose(2, 3)
        out = from_cuboids(out, geo.layer.size, strategy, geo.grid).flatten(-2)
        if any(shift):
            out = torch.roll(out, shifts=(shift[1], shift[2]), dims=(2, 3))
        out = unpad_grid(out, (t, h, w), self.padding_type)
        return self.proj_drop(self.proj(out))
