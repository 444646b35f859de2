"""Cuboid decomposition of a space-time grid: the geometry behind cuboid attention.

A B×T×H×W×C tensor is cut into non-overlapping cuboids of size (bT, bH, bW); attention then runs inside each
cuboid, all cuboids in parallel (Gao et al., NeurIPS 2022, Sec. 3.1). Per axis the decomposition strategy is
    'l' (local):   contiguous blocks   [0, b), [b, 2b), …
    'd' (dilated): strided positions   {j, j + L/b, j + 2L/b, …} for j in [0, L/b)
and an optional cyclic shift (Swin-style) moves block borders; a region mask keeps shifted cuboids from
mixing tokens that only became neighbours by wrapping around. Axes are padded at the end to a multiple of the
cuboid. `padding_type` (the reference implementation's three options) decides what padding is:
    'ignore'   zero tokens that are masked out of attention;
    'zeros'    zero tokens that stay attendable (the published configurations);
    'nearest'  no extra tokens: the grid is resampled (nearest neighbour) to the padded size and back.

Everything here is pure geometry on index grids (no parameters); attention layers cache the results per shape.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

Size3 = tuple[int, int, int]


class CuboidLayer(NamedTuple):
    """One cuboid self-attention layer: cuboid size, per-axis strategy ('l'/'d') and cyclic shift."""

    size: Size3
    strategy: tuple[str, str, str] = ("l", "l", "l")
    shift: Size3 = (0, 0, 0)


def fit_cuboid(shape: Size3, layer: CuboidLayer) -> CuboidLayer:
    """Clamp a cuboid to the grid: an axis shorter than the cuboid becomes one whole cuboid with no shift;
    dilated axes never shift (every dilated cuboid already spans the whole axis)."""
    size, shift = [], []
    for length, block, offset, strategy in zip(shape, layer.size, layer.shift, layer.strategy):
        if strategy not in ("l", "d"):
            raise ValueError(f"cuboid strategy must be 'l' or 'd', got {strategy!r}")
        if block >= length:
            block, offset = length, 0
        if strategy == "d":
            offset = 0
        size.append(block)
        shift.append(offset % block)
    return CuboidLayer(tuple(size), tuple(layer.strategy), tuple(shift))


def padded(shape: Size3, size: Size3) -> Size3:
    """The grid padded at the end of each axis to a multiple of the cuboid size."""
    return tuple(length + (-length) % block for length, block in zip(shape, size))


# ----------------------------------------------------------------------------------------------------------
# Reordering a (B, T, H, W, *tail) tensor into (B, num_cuboids, cuboid_volume, *tail) and back.
# Each axis of length L splits into (number of cuboids, position inside the cuboid); for 'l' the cuboid index
# is the outer factor, for 'd' the inner one. One reshape + permute each way, so a single copy.


def _split_axes(shape: Size3, size: Size3, strategy) -> tuple[list[int], list[int], list[int]]:
    """Split sizes for the three axes and, for each axis, where its (cuboid index, position) factors land."""
    split, outer, inner = [], [], []
    for axis, (length, block, kind) in enumerate(zip(shape, size, strategy)):
        count = length // block
        if kind == "l":
            split += [count, block]
            outer.append(1 + 2 * axis)
            inner.append(2 + 2 * axis)
        else:
            split += [block, count]
            outer.append(2 + 2 * axis)
            inner.append(1 + 2 * axis)
    return split, outer, inner


def to_cuboids(x: torch.Tensor, size: Size3, strategy) -> torch.Tensor:
    """(B, T, H, W, *tail) with T, H, W multiples of `size` → (B, num_cuboids, cuboid_volume, *tail)."""
    batch, grid, tail = x.shape[0], tuple(x.shape[1:4]), tuple(x.shape[4:])
    split, outer, inner = _split_axes(grid, size, strategy)
    x = x.reshape(batch, *split, *tail)
    tail_axes = list(range(7, 7 + len(tail)))
    x = x.permute(0, *outer, *inner, *tail_axes)
    num_cuboids = (grid[0] // size[0]) * (grid[1] // size[1]) * (grid[2] // size[2])
    return x.reshape(batch, num_cuboids, size[0] * size[1] * size[2], *tail)


def from_cuboids(x: torch.Tensor, size: Size3, strategy, grid: Size3) -> torch.Tensor:
    """Inverse of `to_cuboids`: (B, num_cuboids, cuboid_volume, *tail) → (B, T, H, W, *tail)."""
    batch, tail = x.shape[0], tuple(x.shape[3:])
    counts = [length // block for length, block in zip(grid, size)]
    x = x.reshape(batch, *counts, *size, *tail)
    order = [0]
    for axis, kind in enumerate(strategy):  # (cuboid index at 1+axis, position at 4+axis)
        order += [1 + axis, 4 + axis] if kind == "l" else [4 + axis, 1 + axis]
    x = x.permute(*order, *range(7, 7 + len(tail)))
    return x.reshape(batch, *grid, *tail)


# ----------------------------------------------------------------------------------------------------------
# Masks. Built on the padded, shifted grid, then reordered like the data, so position v of cuboid n in a mask
# is exactly token v of cuboid n in the attention.


def _region_labels(length: int, block: int, shift: int) -> torch.Tensor:
    """Swin's three regions along one shifted axis: untouched, the last block's own part, the wrapped part."""
    labels = torch.zeros(length, dtype=torch.long)
    if shift > 0:
        labels[length - block : length - shift] = 1
        labels[length - shift :] = 2
    return labels


def _shifted_real_grid(shape: Size3, size: Size3, shift: Size3) -> torch.Tensor:
    """(Tp, Hp, Wp) bool: which tokens of the padded grid are real, after the cyclic shift."""
    grid = padded(shape, size)
    real = torch.zeros(grid, dtype=torch.bool)
    real[: shape[0], : shape[1], : shape[2]] = True
    return torch.roll(real, shifts=tuple(-s for s in shift), dims=(0, 1, 2))


def _cuboid_values(grid_values: torch.Tensor, size: Size3, strategy) -> torch.Tensor:
    """(Tp, Hp, Wp) → (num_cuboids, cuboid_volume), reordered like the data."""
    return to_cuboids(grid_values[None, ..., None], size, strategy)[0, ..., 0]


def self_attention_mask(shape: Size3, layer: CuboidLayer, mask_padding: bool = True) -> torch.Tensor | None:
    """(num_cuboids, V, V) bool, True where query v may attend key v' (same shift region and, with
    `mask_padding`, key not padding); None when every token may attend every token of its cuboid."""
    size, shift = layer.size, layer.shift
    grid = padded(shape, size)
    pads = mask_padding and grid != tuple(shape)
    if not pads and not any(shift):
        return None
    t, h, w = (_region_labels(n, b, s) for n, b, s in zip(grid, size, shift))
    region = (t[:, None, None] * 9 + h[None, :, None] * 3 + w[None, None, :]).contiguous()
    region = _cuboid_values(region, size, layer.strategy)
    allowed = region[:, :, None] == region[:, None, :]
    if pads:
        allowed &= _cuboid_values(_shifted_real_grid(shape, size, shift), size, layer.strategy)[:, None, :]
    return allowed


def token_is_real(shape: Size3, layer: CuboidLayer) -> torch.Tensor | None:
    """(num_cuboids, V) bool: which cuboid tokens are real (not padding); None when nothing is padded."""
    if padded(shape, layer.size) == tuple(shape):
        return None
    return _cuboid_values(_shifted_real_grid(shape, layer.size, layer.shift), layer.size, layer.strategy)


def cross_attention_mask(
    x_grid: Size3, mem_shape: Size3, mem_grid: Size3, x_layer: CuboidLayer, mem_layer: CuboidLayer,
    mem_time_pad: int, mask_padding: bool = True,
) -> torch.Tensor | None:
    """(num_cuboids, Vx, Vmem) bool for cross attention on the padded grids: same spatial shift region and,
    with `mask_padding`, memory token not padding.

    The memory is padded in time at the front (so its last frame stays last), the query at the end; H and W
    are padded at the end and shifted together. Both grids share one spatial decomposition."""
    shift = mem_layer.shift
    pads = mask_padding and tuple(mem_grid) != tuple(mem_shape)
    if not pads and not any(shift):
        return None
    mem_real = torch.zeros(mem_grid, dtype=torch.bool)
    mem_real[mem_time_pad : mem_time_pad + mem_shape[0], : mem_shape[1], : mem_shape[2]] = True
    mem_real = torch.roll(mem_real, shifts=(0, -shift[1], -shift[2]), dims=(0, 1, 2))
    h = _region_labels(mem_grid[1], mem_layer.size[1], shift[1])
    w = _region_labels(mem_grid[2], mem_layer.size[2], shift[2])
    spatial = h[:, None] * 3 + w[None, :]
    x_region = _cuboid_values(spatial.expand(x_grid[0], -1, -1).contiguous(), x_layer.size, x_layer.strategy)
    mem_region = _cuboid_values(spatial.expand(mem_grid[0], -1, -1).contiguous(), mem_layer.size, mem_layer.strategy)
    allowed = x_region[:, :, None] == mem_region[:, None, :]
    if pads:
        allowed &= _cuboid_values(mem_real, mem_layer.size, mem_layer.strategy)[:, None, :]
    return allowed


# ----------------------------------------------------------------------------------------------------------
# Relative positions. The bias table of a layer has one entry per relative offset of its (largest) cuboid,
# (2·Bt−1)(2·Bh−1)(2·Bw−1) rows; offsets are measured in within-cuboid steps (for a dilated axis one step is
# L/b grid cells). A clamped cuboid uses the subset of offsets it can reach, so the index is computed from the
# actual cuboid but with the table's strides (the reference slices the index of the large cuboid, which
# pairs the wrong offsets once a cuboid is clamped on an inner axis).


def _flat_coords(size: Size3) -> torch.Tensor:
    """(V, 3) within-cuboid coordinates in the token order of `to_cuboids`."""
    grids = torch.meshgrid(*(torch.arange(n) for n in size), indexing="ij")
    return torch.stack(grids, dim=-1).reshape(-1, 3)


def relative_position_index(query_size: Size3, key_size: Size3, table_size: Size3) -> torch.Tensor:
    """(Vq, Vk) long: row of the (2·Tt−1)(2·Th−1)(2·Tw−1) bias table for each query/key pair.

    Offsets are query minus key coordinates within their cuboids. In cross attention both cuboids count
    their frames from 0, so query frame i and memory frame j share a bias with every pair of the same i − j
    (as in the reference implementation)."""
    query, key = _flat_coords(query_size), _flat_coords(key_size)
    offset = query[:, None, :] - key[None, :, :] + torch.tensor(table_size) - 1
    span = [2 * n - 1 for n in table_size]
    if (offset < 0).any() or any((offset[..., i] >= span[i]).any() for i in range(3)):
        raise ValueError(f"cuboid {query_size}/{key_size} does not fit relative-position table {table_size}")
    return (offset[..., 0] * span[1] + offset[..., 1]) * span[2] + offset[..., 2]


PADDING_TYPES = ("ignore", "zeros", "nearest")


def _resample(x: torch.Tensor, size: Size3) -> torch.Tensor:
    """Nearest-neighbour resampling of (B, T, H, W, C) to (B, *size, C)."""
    return F.interpolate(x.permute(0, 4, 1, 2, 3), size=tuple(size)).permute(0, 2, 3, 4, 1)


def pad_grid(x: torch.Tensor, pad: Size3, mode: str = "zeros", time_front: bool = False) -> torch.Tensor:
    """Pad (B, T, H, W, C) by `pad` cells at the end of T, H, W (at the front of T with `time_front`): zeros
    for 'zeros'/'ignore'; for 'nearest' the whole grid is resampled to the padded size (`time_front` unused),
    as in the reference implementation."""
    if not any(pad):
        return x
    if mode not in PADDING_TYPES:
        raise ValueError(f"padding_type must be one of {', '.join(PADDING_TYPES)}, got {mode!r}")
    if mode == "nearest":
        return _resample(x, tuple(n + p for n, p in zip(x.shape[1:4], pad)))
    t_pad = (pad[0], 0) if time_front else (0, pad[0])
    return F.pad(x, (0, 0, 0, pad[2], 0, pad[1], *t_pad))


def unpad_grid(x: torch.Tensor, shape: Size3, mode: str = "zeros") -> torch.Tensor:
    """Inverse of `pad_grid` (end padding): crop to `shape`, or resample back for 'nearest'."""
    if tuple(x.shape[1:4]) == tuple(shape):
        return x
    if mode == "nearest":
        return _resample(x, shape)
    return x[:, : shape[0], : shape[1], : shape[2]]
