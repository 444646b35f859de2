"""Forecast files: an ensemble gets a member dimension, a write that fails leaves no file; joining the per-rank
files of a DDP evaluation keeps dataset order, uneven shares, the sample cap and the writer's own layout
(compression, chunks, attributes)."""

import netCDF4
import numpy as np
import torch

from earthcast.data.forecast_file import ForecastFile, merge_rank_parts, rank_part_path


def _write_share(path, rank: int, world_size: int, n_total: int) -> None:
    """Rank `rank`'s share of n_total samples whose values (and event ids) encode their dataset index."""
    indices = list(range(rank, n_total, world_size))
    writer = ForecastFile(rank_part_path(path, rank), dataset="sevir", attrs={"model": "unet"})
    for start in range(0, len(indices), 2):  # batches of 2, the last one short
        batch = indices[start:start + 2]
        values = torch.tensor(batch, dtype=torch.float32).view(-1, 1, 1, 1, 1).expand(-1, 3, 4, 5, 1)
        writer.write(values, values + 0.5, values[:, :2], {"event_id": [f"E{i}" for i in batch]})
    writer.close()


def test_rank_parts_join_in_dataset_order(tmp_path):
    path = tmp_path / "predictions.nc"
    for rank in range(2):
        _write_share(path, rank, 2, n_total=7)  # shares of 4 and 3 samples
    assert merge_rank_parts(path, 2) == path
    assert not list(tmp_path.glob("*.rank*")) and not list(tmp_path.glob(".*.tmp"))
    with netCDF4.Dataset(path) as nc:
        assert np.array_equal(nc["prediction"][:, 0, 0, 0], np.arange(7))
        assert np.array_equal(nc["target"][:, 0, 0, 0], np.arange(7) + 0.5)
        assert list(nc["event_id"][:]) == [f"E{i}" for i in range(7)]
        assert nc["prediction"].filters()["zlib"] and nc["prediction"].chunking() == [1, 3, 4, 5]
        assert nc["prediction"].units == "1" and nc.dataset == "sevir" and nc.model == "unet"
        assert nc.dimensions["sample"].isunlimited()


def test_rank_parts_join_keeps_the_first_samples_under_a_cap(tmp_path):
    path = tmp_path / "predictions.nc"
    for rank in range(3):
        _write_share(path, rank, 3, n_total=8)
    merge_rank_parts(path, 3, max_samples=5)
    with netCDF4.Dataset(path) as nc:
        assert np.array_equal(nc["prediction"][:, 0, 0, 0], np.arange(5))
    assert merge_rank_parts(tmp_path / "nothing.nc", 2) is None  # no rank wrote anything


def test_ensembles_get_a_member_dimension_and_aborted_files_vanish(tmp_path):
    path = tmp_path / "predictions.nc"
    writer = ForecastFile(path, dataset="sevir")
    members = torch.rand(2, 3, 4, 5, 6, 1)  # B × M × T × H × W × C
    writer.write(members, members[:, 0], None, {})
    assert writer.close() == path
    with netCDF4.Dataset(path) as nc:
        assert nc["prediction"].dimensions == ("sample", "member", "lead_time", "y", "x")
    broken = ForecastFile(tmp_path / "broken.nc", dataset="sevir")
    broken.write(members[:, 0], members[:, 0], None, {})
    broken.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.nc"]


def test_rank_parts_keep_the_cf_layout(tmp_path):
    """Fill values, coordinates and times survive the join of a distributed evaluation's parts."""
    import pandas as pd

    from earthcast.data.base import ForecastLayout

    path = tmp_path / "predictions.nc"
    layout = ForecastLayout(frame=pd.Timedelta(minutes=5), variable={"units": "1"})
    for rank in range(2):
        part = ForecastFile(rank_part_path(path, rank), dataset="sevir", layout=layout)
        values = torch.full((1, 3, 4, 5, 1), float(rank))
        part.write(values, values.clone().fill_(float("nan")), None, {"init_time": [f"2020-01-01T0{rank}:00:00"]})
        part.close()
    merge_rank_parts(path, 2)
    with netCDF4.Dataset(path) as nc:
        assert np.isnan(nc["target"][:].filled(np.nan)).all() and list(nc["lead_time"][:]) == [5, 10, 15]
        assert list(nc["init_time"][:]) == [26297280.0, 26297340.0] and nc["valid_time"][1, 0] == 26297345.0
