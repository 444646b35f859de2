"""Earthformer geometry: cuboid decomposition, masks, relative positions, named patterns."""

from __future__ import annotations

import itertools

import pytest
import torch

from earthcast.errors import UserError
from earthcast.layers import attention as attention_module
from earthcast.layers.attention import CuboidCrossAttention, CuboidSelfAttention
from earthcast.layers.cuboid import (
    CuboidLayer,
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
from earthcast.layers.patterns import CrossLayer, cross_pattern, self_pattern

STRATEGIES = list(itertools.product("ld", repeat=3))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared 2-core machine every parallel region
    would wait for a descheduled thread; one thread keeps these tests fast and steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def coordinate_grid(t: int, h: int, w: int) -> torch.Tensor:
    """(1, T, H, W, 3) holding each cell's own (t, h, w)."""
    grids = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack(grids, dim=-1)[None]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 2), (1, 2, 0)])
def test_reorder_round_trip_every_strategy_and_shift(strategy, shift):
    shape, size = (4, 6, 9), (2, 3, 3)
    x = torch.randn(2, *shape, 5)
    shifted = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    cuboids = to_cuboids(shifted, size, strategy)
    assert cuboids.shape == (2, 2 * 2 * 3, 2 * 3 * 3, 5)
    back = torch.roll(from_cuboids(cuboids, size, strategy, shape), shifts=shift, dims=(1, 2, 3))
    assert torch.equal(back, x)


def test_local_cuboids_are_blocks_and_dilated_cuboids_are_strided():
    coords = coordinate_grid(4, 6, 1)
    local = to_cuboids(coords, (2, 3, 1), "lll")[0]  # (n, V, 3)
    assert set(local[0, :, 0].tolist()) == {0, 1} and set(local[0, :, 1].tolist()) == {0, 1, 2}
    dilated = to_cuboids(coords, (2, 3, 1), "ddl")[0]
    assert set(dilated[0, :, 0].tolist()) == {0, 2} and set(dilated[0, :, 1].tolist()) == {0, 2, 4}
    assert set(dilated[-1, :, 0].tolist()) == {1, 3} and set(dilated[-1, :, 1].tolist()) == {1, 3, 5}


def test_round_trip_with_padding():
    x = torch.randn(1, 3, 5, 7, 2)
    layer = fit_cuboid((3, 5, 7), CuboidLayer((2, 2, 4), ("l", "d", "l"), (1, 0, 2)))
    pad = tuple(p - s for p, s in zip(padded((3, 5, 7), layer.size), (3, 5, 7)))
    for mode in ("zeros", "ignore", "nearest"):
        grid = pad_grid(x, pad, mode)
        assert grid.shape[1:4] == (4, 6, 8)
        back = from_cuboids(to_cuboids(grid, layer.size, layer.strategy), layer.size, layer.strategy, (4, 6, 8))
        assert torch.equal(back, grid)
        assert unpad_grid(back, (3, 5, 7), mode).shape == x.shape
    assert torch.equal(pad_grid(x, pad, "zeros")[:, :3, :5, :7], x)
    assert pad_grid(x, pad, "zeros")[:, 3:].abs().max() == 0


def test_nearest_padding_resamples_the_grid_as_the_reference_does():
    """'nearest' stretches the whole grid to the padded size (nearest-neighbour interpolation) and shrinks it
    back afterwards; it adds no tokens at the end."""
    x = torch.arange(3 * 5 * 7, dtype=torch.float32).view(1, 3, 5, 7, 1)
    grid = pad_grid(x, (1, 1, 1), "nearest")
    assert torch.equal(grid[0, :, 0, 0, 0], torch.tensor([0.0, 0.0, 35.0, 70.0]))  # frames 0, 0, 1, 2
    assert torch.equal(grid[0, 0, 0, :, 0], torch.tensor([0.0, 0, 1, 2, 3, 4, 5, 6]))
    assert torch.equal(pad_grid(x, (1, 0, 0), "nearest", time_front=True), pad_grid(x, (1, 0, 0), "nearest"))
    shrunk = unpad_grid(grid, (3, 5, 7), "nearest")
    assert shrunk.shape == x.shape and set(shrunk.unique().tolist()) <= set(x.unique().tolist())


def test_fit_clamps_cuboid_and_drops_shift():
    fitted = fit_cuboid((3, 8, 8), CuboidLayer((4, 4, 4), ("l", "l", "d"), (2, 2, 2)))
    assert fitted.size == (3, 4, 4) and fitted.shift == (0, 2, 0)


def test_shifted_cuboids_never_attend_across_the_wrap():
    shape = (4, 6, 6)
    layer = CuboidLayer((2, 3, 3), ("l", "l", "l"), (1, 1, 2))
    allowed = self_attention_mask(shape, layer)
    # where each token of each cuboid came from before the shift
    coords = torch.roll(coordinate_grid(*shape), shifts=(-1, -1, -2), dims=(1, 2, 3))
    origin = to_cuboids(coords, layer.size, layer.strategy)[0]  # (n, V, 3)
    distance = (origin[:, :, None, :] - origin[:, None, :, :]).abs()  # (n, V, V, 3)
    neighbours = (distance < torch.tensor(layer.size)).all(-1)  # same cuboid without wrapping
    assert torch.equal(allowed, neighbours)
    assert allowed.any(-1).all()  # every token keeps at least itself


@pytest.mark.parametrize("shape, layer", [
    ((3, 5, 7), CuboidLayer((2, 3, 4), ("l", "l", "l"), (1, 1, 2))),  # padding on every axis + shift
    ((5, 8, 6), CuboidLayer((2, 4, 3), ("l", "d", "l"), (1, 2, 1))),  # dilated H: its shift is dropped
    ((4, 6, 6), CuboidLayer((8, 3, 3), ("l", "l", "l"), (3, 1, 1))),  # T clamped to the axis: no T shift
])
def test_shifted_padded_cuboids_attend_only_real_unwrapped_neighbours(shape, layer):
    """The mask on the padded, shifted grid equals the rule written out on original coordinates: a query
    may attend a key iff the key is a real token and, along every local axis, the two came from the same
    cuboid before the shift (no wrapping)."""
    layer = fit_cuboid(shape, layer)
    grid = padded(shape, layer.size)
    allowed = self_attention_mask(shape, layer)
    coords = torch.roll(coordinate_grid(*grid), shifts=tuple(-s for s in layer.shift), dims=(1, 2, 3))
    origin = to_cuboids(coords, layer.size, layer.strategy)[0]  # (n, V, 3) pre-shift position, padded grid
    real = (origin < torch.tensor(shape)).all(-1)  # (n, V)
    distance = (origin[:, :, None, :] - origin[:, None, :, :]).abs()
    local = torch.tensor([kind == "l" for kind in layer.strategy])
    unwrapped = ((distance < torch.tensor(layer.size)) | ~local).all(-1)
    assert torch.equal(allowed, unwrapped & real[:, None, :])
    is_real = token_is_real(shape, layer)  # None: nothing padded
    assert real.all() if is_real is None else torch.equal(is_real, real)
    assert allowed.any(-1)[real].all()  # every real query keeps at least itself


def test_no_mask_without_padding_or_shift():
    assert self_attention_mask((4, 6, 6), CuboidLayer((2, 3, 3))) is None
    assert token_is_real((4, 6, 6), CuboidLayer((2, 3, 3))) is None


class _Recorder:
    """Stands in for attention.attend and keeps the explicit softmax weights of every call."""

    def __init__(self):
        self.weights = []

    def __call__(self, q, k, v, mask, dropout_p, scale):
        scores = q.float() @ k.float().transpose(-1, -2) * scale
        if mask is not None:
            scores = scores + mask.float()
        weights = scores.softmax(-1)
        self.weights.append(weights)
        return (weights @ v.float()).to(v.dtype)


@pytest.mark.parametrize("strategy", ["lll", "dld"])
def test_ignored_padding_gets_zero_attention_weight(monkeypatch, strategy):
    shape = (3, 5, 4)  # pads T by 1 and H by 1 for a (2, 3, 4) cuboid
    layer = CuboidLayer((2, 3, 4), tuple(strategy), (1, 1, 0) if strategy == "lll" else (0, 0, 0))
    attn = CuboidSelfAttention(8, 2, layer, use_global_vectors=True, use_global_self_attn=True,
                               separate_global_qkv=True, padding_type="ignore").eval()
    recorder = _Recorder()
    monkeypatch.setattr(attention_module, "attend", recorder)
    out, g = attn(torch.randn(2, *shape, 8), torch.randn(2, 3, 8))
    assert out.shape == (2, *shape, 8) and g.shape == (2, 3, 8)

    fitted = fit_cuboid(shape, layer)
    real = token_is_real(shape, fitted)  # (n, V)
    local, to_globals = recorder.weights  # (B·n, heads, V, V + 3), (B, heads, 3, n·V + 3)
    n, volume = real.shape
    local = local.view(2, n, 2, volume, volume + 3)
    padded_keys = ~real[None, :, None, None, :].expand(2, -1, 2, volume, -1)
    real_queries = real[None, :, None, :, None].expand_as(padded_keys)
    assert (~real).any()
    assert local[..., :volume][padded_keys & real_queries].abs().max() == 0
    assert torch.allclose(local.sum(-1), torch.ones(()))
    assert to_globals[..., : n * volume][..., ~real.reshape(-1)].abs().max() == 0
    assert torch.isfinite(out).all() and torch.isfinite(g).all()


@pytest.mark.parametrize("strategy", ["lll", "dld"])
def test_zero_padding_stays_attendable(monkeypatch, strategy):
    """padding_type='zeros' (the published models): padded tokens are zero vectors that every real query
    may attend, and the global vectors read them too."""
    shape, layer = (3, 5, 4), CuboidLayer((2, 3, 4), tuple(strategy))
    attn = CuboidSelfAttention(8, 2, layer, use_global_vectors=True, separate_global_qkv=True).eval()
    with torch.no_grad():
        attn.relative_position_bias.zero_()
    recorder = _Recorder()
    monkeypatch.setattr(attention_module, "attend", recorder)
    attn(torch.randn(2, *shape, 8), torch.randn(2, 3, 8))
    real = token_is_real(shape, fit_cuboid(shape, layer))
    local, to_globals = recorder.weights
    n, volume = real.shape
    local = local.view(2, n, 2, volume, volume + 3)[..., :volume]
    padded_keys = (~real)[None, :, None, None, :].expand_as(local)
    assert padded_keys.any() and (local[padded_keys] > 0).all()
    assert (to_globals[..., : n * volume][..., ~real.reshape(-1)] > 0).all()


def test_cross_attention_masks_front_padded_memory(monkeypatch):
    layer = CrossLayer((2, 2), (1, 1), ("l", "l", "l"), n_temporal=2)
    attn = CuboidCrossAttention(8, 2, layer, max_temporal_relative=10, padding_type="ignore").eval()
    recorder = _Recorder()
    monkeypatch.setattr(attention_module, "attend", recorder)
    out = attn(torch.randn(1, 3, 4, 3, 8), torch.randn(1, 5, 4, 3, 8))  # Tm=5 → 1 front pad; W=3 → 1 pad
    assert out.shape == (1, 3, 4, 3, 8)
    geo = attn.geometry((3, 4, 3), (5, 4, 3), torch.device("cpu"))
    weights = recorder.weights[0]  # (n, heads, Vx, Vm)
    real_queries = token_is_real((3, 4, 3), geo.layer)[:, None, :, None].expand_as(weights)
    blocked = geo.blocked.expand_as(weights)
    assert weights[blocked & real_queries].abs().max() == 0
    assert blocked.any() and not (blocked | ~real_queries).all(-1)[real_queries[..., 0]].any()
    assert torch.isfinite(weights).all()  # padded queries see only padding: uniform, not NaN


def test_relative_position_index_hand_checked():
    # cuboid (2, 1, 2): tokens (t, w) = (0,0) (0,1) (1,0) (1,1); table spans 3 × 1 × 3 offsets
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index((2, 1, 2), (2, 1, 2), (2, 1, 2)), expected)
    # the same cuboid clamped inside a (3, 1, 3) table: offsets keep their meaning, 5 × 1 × 5 rows
    clamped = relative_position_index((2, 1, 2), (2, 1, 2), (3, 1, 3))
    assert torch.equal(clamped[0], torch.tensor([12, 11, 7, 6])) and clamped[3, 3] == 12
    # cross attention: 2 query frames, 3 memory frames, both counted from 0 (t_q − t_k), table of 5 frames
    cross = relative_position_index((2, 1, 1), (3, 1, 1), (5, 1, 1))
    assert torch.equal(cross, torch.tensor([[4, 3, 2], [5, 4, 3]]))
    with pytest.raises(ValueError):
        relative_position_index((4, 1, 1), (4, 1, 1), (3, 1, 1))


@pytest.mark.parametrize("query, key, table", [
    ((2, 3, 1), (2, 3, 1), (2, 3, 1)),  # full-size cuboid
    ((1, 2, 3), (1, 2, 3), (4, 4, 4)),  # clamped on every axis
    ((2, 1, 2), (2, 1, 2), (3, 1, 3)),  # clamped on the inner axes only (the reference's failure case)
    ((2, 2, 2), (3, 2, 2), (5, 2, 2)),  # cross attention: query and memory cuboids of different lengths
])
def test_relative_position_index_decodes_to_the_true_offset(query, key, table):
    """Every index row decodes, with the table's strides, to exactly query − key coordinates."""
    index = relative_position_index(query, key, table)
    span = [2 * n - 1 for n in table]
    decoded = torch.stack([index // (span[1] * span[2]), index // span[2] % span[1], index % span[2]], -1)
    decoded = decoded - torch.tensor(table) + 1
    grids = [torch.stack(torch.meshgrid(*(torch.arange(n) for n in size), indexing="ij"), -1).reshape(-1, 3)
             for size in (query, key)]
    assert torch.equal(decoded, grids[0][:, None, :] - grids[1][None, :, :])
    assert 0 <= index.min() and index.max() < span[0] * span[1] * span[2]


def test_bias_table_size_and_clamped_use():
    attn = CuboidSelfAttention(8, 2, CuboidLayer((4, 1, 3)))
    assert attn.relative_position_bias.shape == (7 * 1 * 5, 2)
    out = attn(torch.randn(1, 2, 2, 2, 8))  # runs with a cuboid clamped to (2, 1, 2)
    assert out.shape == (1, 2, 2, 2, 8)
    assert attn.geometry((2, 2, 2), torch.device("cpu")).rel_index.max() < 35


def test_named_self_patterns():
    t, h, w = 5, 8, 8
    assert self_pattern("full", (t, h, w)) == [CuboidLayer((5, 8, 8))]
    assert [c.size for c in self_pattern("axial", (t, h, w))] == [(5, 1, 1), (1, 8, 1), (1, 1, 8)]
    assert [c.size for c in self_pattern("divided_st", (t, h, w))] == [(5, 1, 1), (1, 8, 8)]
    swin = self_pattern("video_swin_2x4", (t, h, w))
    assert swin == [CuboidLayer((2, 4, 4)), CuboidLayer((2, 4, 4), ("l", "l", "l"), (1, 2, 2))]
    assert self_pattern("video_swin_8x16", (t, h, w))[1] == CuboidLayer((5, 8, 8), ("l",) * 3, (2, 4, 4))
    lg = self_pattern("spatial_lg_4", (t, h, w))
    assert lg == [CuboidLayer((5, 1, 1)), CuboidLayer((1, 4, 4)), CuboidLayer((1, 4, 4), ("d", "d", "d"))]
    assert self_pattern("spatial_lg_8", (t, h, w)) == [CuboidLayer((5, 1, 1)), CuboidLayer((1, 8, 8))]
    dilate = self_pattern("axial_space_dilate_2", (t, h, w))
    assert [c.size for c in dilate] == [(5, 1, 1), (1, 4, 1), (1, 4, 1), (1, 1, 4), (1, 1, 4)]
    assert [c.strategy[1] for c in dilate] == ["l", "d", "l", "d", "l"]
    with pytest.raises(UserError):
        self_pattern("axial_3d", (t, h, w))


def test_named_cross_patterns():
    assert cross_pattern("cross_1x1", (5, 8, 8)) == [CrossLayer((1, 1))]
    assert cross_pattern("cross_2x2_lg", (5, 8, 8)) == [CrossLayer((2, 2)), CrossLayer((2, 2), (0, 0), ("d",) * 3)]
    heter = cross_pattern("cross_4x4_heter", (5, 8, 8))
    assert [c.shift_hw for c in heter] == [(0, 0), (0, 0), (2, 2)]
    assert cross_pattern("cross_8x8", (5, 4, 6)) == [CrossLayer((4, 4))]
    with pytest.raises(UserError):
        cross_pattern("cross_2x3", (5, 8, 8))


def test_cross_attention_with_several_temporal_cuboids():
    """n_temporal=3 with 4 query and 5 memory frames: the query is padded to 6 frames (three cuboids of 2),
    the memory at the front to 6, so query frames 0–1 see only memory frame 0, frames 2–3 see memory 1–2."""
    torch.manual_seed(0)
    attn = CuboidCrossAttention(8, 2, CrossLayer((2, 2), n_temporal=3), max_temporal_relative=9,
                                padding_type="ignore").eval()
    x, mem = torch.randn(1, 4, 2, 2, 8), torch.randn(1, 5, 2, 2, 8)
    geo = attn.geometry((4, 2, 2), (5, 2, 2), torch.device("cpu"))
    assert geo.grid == (6, 2, 2) and geo.layer.size == (2, 2, 2) and geo.mem_layer.size == (2, 2, 2)
    out = attn(x, mem)
    assert out.shape == x.shape and torch.isfinite(out).all()
    changed = mem.clone()
    changed[:, 1:] += 1.0
    assert torch.allclose(attn(x, changed)[:, :2], out[:, :2])
    assert not torch.allclose(attn(x, changed)[:, 2:], out[:, 2:])
