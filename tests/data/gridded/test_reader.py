"""dataset=gridded on hand-made stores: one file, a glob, a directory, Zarr; frames as stored, the chunk cache
bounded; windows inside date-range splits and never across a gap; normalisation fitted on the training split's
valid points and restored from a checkpoint's state; NaN and land points masked; one-line errors for a
missing variable, a time axis with gaps and a grid that does not match the config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from earthcast.data import build_datamodule, check
from earthcast.data.gridded import GriddedStore
from earthcast.errors import UserError
from tests.conftest import dataset_config

H, W = 3, 4


def frames(n: int) -> np.ndarray:
    """Frame t holds t + (pixel index)/100: every value says where it came from."""
    return (np.arange(n)[:, None, None] + np.arange(H * W).reshape(1, H, W) / 100).astype(np.float32)


def write_store(path, times, values=None, land=None, variable="v", **encoding):
    values = frames(len(times)) if values is None else values
    data = {variable: (("time", "y", "x"), values, {"units": "K"})}
    if land is not None:
        data["lsm"] = (("y", "x"), land)
    ds = xr.Dataset(data, coords={"time": times, "y": np.arange(H) * 10.0, "x": np.arange(W) * 10.0})
    if str(path).endswith(".zarr"):
        ds.to_zarr(path)
    else:
        ds.to_netcdf(path)
    return path


def config(path, **values):
    cfg = dataset_config("gridded", path=None if path is None else str(path), variable="v", dims=["y", "x"], height=H, width=W, in_len=2,
                         out_len=1, stride=1, batch_size=2, eval_batch_size=2, num_workers=0,
                         splits={"train": [None, "2020-01-03"], "val": ["2020-01-03", "2020-01-04"],
                                 "test": ["2020-01-04", None]})
    return {**cfg, **values}


def daily(n: int, start: str = "2020-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="6h")


@pytest.mark.parametrize("layout", ["file", "glob", "directory", "zarr"])
def test_every_layout_reads_the_frames_as_stored(tmp_path, layout):
    times = daily(12)
    if layout == "file":
        path = write_store(tmp_path / "one.nc", times)
    elif layout == "zarr":
        path = write_store(tmp_path / "one.zarr", times)
    else:  # three files, written out of order: joined by their first time
        for part, index in zip("cab", np.split(np.arange(12), 3)):
            write_store(tmp_path / f"{part}.nc", times[index], frames(12)[index])
        path = tmp_path / "*.nc" if layout == "glob" else tmp_path
    store = GriddedStore(path, "v", "time", ["y", "x"], chunk_frames=4, cache_chunks=2)
    assert store.shape == (H, W) and len(store.times) == 12 and (store.times == times).all()
    np.testing.assert_array_equal(store.frames(3, 9), frames(12)[3:9])
    assert store.cached_frames <= 2 * 4  # bounded: the least recently used block went


def test_windows_stay_inside_their_split_and_carry_times(tmp_path):
    module = build_datamodule(config(write_store(tmp_path / "s.nc", daily(16))))
    # 6-hourly from 2020-01-01: train [.., 01-03) = frames 0–7, val 8–11, test 12–15; windows of 3 frames
    assert module.window_starts("train").tolist() == list(range(0, 6))
    assert module.window_starts("val").tolist() == [8, 9] and module.window_starts("test").tolist() == [12, 13]
    module.setup("fit")
    item = module.dataset("val")[0]
    stats = module.norm_stats
    np.testing.assert_allclose(item["targets"][0, ..., 0].numpy(), (frames(16)[10] - stats["mean"]) / stats["std"],
                               rtol=1e-5)
    assert item["init_time"] == "2020-01-03T06:00:00"  # the last input frame's time
    assert module.forecast_layout().frame == pd.Timedelta("6h")


def test_normalisation_is_fitted_on_the_training_split_and_restored(tmp_path):
    module = build_datamodule(config(write_store(tmp_path / "s.nc", daily(16))))
    train = frames(16)[:8].astype(np.float64)  # the frames the train windows cover
    assert module.norm_stats["mean"] == pytest.approx(train.mean())
    assert module.norm_stats["std"] == pytest.approx(train.std())
    fresh = build_datamodule(config(tmp_path / "s.nc"))
    fresh.load_state_dict({"mean": 1.5, "std": 2.0})  # what a checkpoint holds
    assert fresh.units(torch.tensor(1.0)) == pytest.approx(3.5) and fresh.norm_stats == {"mean": 1.5, "std": 2.0}


def test_nan_and_land_points_are_masked_and_left_out_of_the_statistics(tmp_path):
    values = frames(16)
    values[:, 0, 0] = np.nan  # missing everywhere at one point
    land = np.zeros((H, W))
    land[2, 3] = 1
    path = write_store(tmp_path / "s.nc", daily(16), values, land=land)
    module = build_datamodule(config(path, mask={"variable": "lsm", "invert": True}))
    train = frames(16)[:8].astype(np.float64)
    keep = np.ones((H, W), dtype=bool)
    keep[0, 0] = keep[2, 3] = False
    assert module.norm_stats["mean"] == pytest.approx(train[:, keep].mean())
    item = module.dataset("train")[0]
    assert item["mask"].shape == (1, H, W, 1) and item["mask"][0, ..., 0].numpy().tolist() == keep.tolist()
    assert item["inputs"][:, 0, 0].abs().sum() == 0 and torch.isfinite(item["inputs"]).all()


def test_a_time_axis_with_gaps_is_refused_or_skipped(tmp_path):
    times = daily(16).delete([5])  # 01-02 06:00 missing
    path = write_store(tmp_path / "s.nc", times)
    with pytest.raises(UserError, match=r"1 gap\(s\), the first between 2020-01-02 00:00:00 and 2020-01-02 12:00"):
        build_datamodule(config(path)).window_starts("train")
    module = build_datamodule(config(path, allow_gaps=True))
    assert module.window_starts("train").tolist() == [0, 1, 2]  # 3 and 4 would span the gap after frame 4
    assert module.window_starts("val").tolist() == [7, 8]
    report = check(config(path))
    assert report["gaps"] == 1 and any("allow_gaps" in note for note in report["notes"])


def test_check_reports_coverage_and_nan_fraction(tmp_path):
    values = frames(16)
    values[:8, 0, :] = np.nan  # the first row is missing in the training period
    report = check(config(write_store(tmp_path / "s.nc", daily(16), values), height=5))
    assert report["shape"] == [16, H, W] and report["time_step"] == "6h" and report["gaps"] == 0
    assert report["splits"]["train"]["frames"] == 8 and report["splits"]["train"]["samples"] == 6
    assert report["splits"]["train"]["nan_fraction"] == pytest.approx(W / (H * W))
    assert report["splits"]["test"]["nan_fraction"] == 0
    assert any("dataset.height=3" in note for note in report["notes"])


def test_bad_stores_are_one_line_errors(tmp_path):
    path = write_store(tmp_path / "s.nc", daily(16))
    with pytest.raises(UserError, match=r"has no variable 'tp' \(it has: v\); set dataset.variable"):
        build_datamodule(config(path, variable="tp")).store  # noqa: B018
    with pytest.raises(UserError, match=r"set dataset.height=3 dataset.width=4"):
        build_datamodule(config(path, height=8)).store  # noqa: B018
    with pytest.raises(UserError, match="matches no files"):
        build_datamodule(config(tmp_path / "none_*.nc")).store  # noqa: B018
    with pytest.raises(UserError, match="dataset.path is not set"):
        build_datamodule(config(None))
