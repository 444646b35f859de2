"""Named cuboid-attention patterns (Gao et al., 2022, Sec. 3.1 and Table 1).

A self-attention pattern maps a grid (T, H, W) to the list of cuboid layers stacked in one block; a cross-
attention pattern maps the memory grid to the list of cross layers. Names take their numbers inline:
    self:  full, axial, divided_st, video_swin_PxM, spatial_lg_M, axial_space_dilate_K
    cross: cross_KxK, cross_KxK_lg, cross_KxK_heter
The paper's default (best speed/skill trade-off) is `axial` for self attention and `cross_1x1`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from earthcast.errors import UserError
from earthcast.layers.cuboid import CuboidLayer, Size3

LOCAL, DILATED = ("l", "l", "l"), ("d", "d", "d")


class CrossLayer(NamedTuple):
    """One cuboid cross-attention layer: spatial cuboid, spatial shift, strategy, temporal cuboid count."""

    cuboid_hw: tuple[int, int]
    shift_hw: tuple[int, int] = (0, 0)
    strategy: tuple[str, str, str] = LOCAL
    n_temporal: int = 1


def full(t: int, h: int, w: int) -> list[CuboidLayer]:
    return [CuboidLayer((t, h, w))]


def axial(t: int, h: int, w: int) -> list[CuboidLayer]:
    """Time, then height, then width: three layers of 1-D attention."""
    return [CuboidLayer((t, 1, 1)), CuboidLayer((1, h, 1)), CuboidLayer((1, 1, w))]


def divided_st(t: int, h: int, w: int) -> list[CuboidLayer]:
    """Divided space-time attention (TimeSformer): time, then the whole frame."""
    return [CuboidLayer((t, 1, 1)), CuboidLayer((1, h, w))]


def video_swin(t: int, h: int, w: int, p: int, m: int) -> list[CuboidLayer]:
    """Video Swin: P×M×M windows, then the same windows shifted by half."""
    p, m = min(p, t), min(m, h, w)
    return [CuboidLayer((p, m, m)), CuboidLayer((p, m, m), LOCAL, (p // 2, m // 2, m // 2))]


def spatial_lg(t: int, h: int, w: int, m: int) -> list[CuboidLayer]:
    """Time, then M×M local windows, then M×M dilated (global) windows; the whole frame if it is that small."""
    if h <= m and w <= m:
        return [CuboidLayer((t, 1, 1)), CuboidLayer((1, h, w))]
    return [CuboidLayer((t, 1, 1)), CuboidLayer((1, m, m)), CuboidLayer((1, m, m), DILATED)]


def axial_space_dilate(t: int, h: int, w: int, k: int) -> list[CuboidLayer]:
    """Time, then height and width each split into K dilated and K local segments."""
    k = min(k, h, w)
    return [
        CuboidLayer((t, 1, 1)),
        CuboidLayer((1, h // k, 1), DILATED),
        CuboidLayer((1, h // k, 1)),
        CuboidLayer((1, 1, w // k), DILATED),
        CuboidLayer((1, 1, w // k)),
    ]


def cross(t: int, h: int, w: int, k: int) -> list[CrossLayer]:
    """Each K×K spatial patch of the forecast attends to the same patch over all memory frames."""
    k = min(k, h, w)
    return [CrossLayer((k, k))]


def cross_lg(t: int, h: int, w: int, k: int) -> list[CrossLayer]:
    k = min(k, h, w)
    return [CrossLayer((k, k)), CrossLayer((k, k), (0, 0), DILATED)]


def cross_heter(t: int, h: int, w: int, k: int) -> list[CrossLayer]:
    k = min(k, h, w)
    return [CrossLayer((k, k)), CrossLayer((k, k), (0, 0), DILATED), CrossLayer((k, k), (k // 2, k // 2))]


_SELF: list[tuple[str, Callable]] = [
    (r"full", full),
    (r"axial", axial),
    (r"divided_st", divided_st),
    (r"video_swin_(?P<p>\d+)x(?P<m>\d+)", video_swin),
    (r"spatial_lg_(?P<m>\d+)", spatial_lg),
    (r"axial_space_dilate_(?P<k>\d+)", axial_space_dilate),
]
_CROSS: list[tuple[str, Callable]] = [
    (r"cross_(?P<k>\d+)x(?P=k)", cross),
    (r"cross_(?P<k>\d+)x(?P=k)_lg", cross_lg),
    (r"cross_(?P<k>\d+)x(?P=k)_heter", cross_heter),
]


def _lookup(name: str, table: list[tuple[str, Callable]], kind: str, shape: Size3):
    for pattern, fn in table:
        match = re.fullmatch(pattern, name)
        if match:
            numbers = {key: int(value) for key, value in match.groupdict().items()}
            if any(value < 1 for value in numbers.values()):
                break
            return fn(*shape, **numbers)
    known = ", ".join(p.replace("(?P<p>\\d+)", "P").replace("(?P<m>\\d+)", "M").replace("(?P<k>\\d+)", "K")
                      .replace("(?P=k)", "K") for p, _ in table)
    raise UserError(f"unknown {kind} attention pattern {name!r}; known: {known}")


def self_pattern(name: str, shape: Size3) -> list[CuboidLayer]:
    """The cuboid layers of self-attention pattern `name` on a (T, H, W) grid."""
    return _lookup(name, _SELF, "self", shape)


def cross_pattern(name: str, shape: Size3) -> list[CrossLayer]:
    """The cross layers of cross-attention pattern `name` for a (T, H, W) memory grid."""
    return _lookup(name, _CROSS, "cross", shape)
