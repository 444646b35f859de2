"""Sequence figures and their animations, written atomically: the most active samples of a forecast file, one
per event, each with its own title; columns evenly spaced in time with their time labels."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from PIL import Image

from earthcast.data.forecast_file import ForecastFile
from earthcast.viz import plot_knowledge_rows, plot_rows, write_rows_gif
from earthcast.viz.sequences import (
    activity,
    column_picks,
    most_active,
    plot_forecast_file,
    sample_title,
    time_label,
)


def write_file(path, heavy_pixels, events):
    """A stored forecast file whose sample i has heavy_pixels[i] pixels of VIL 200 in every target frame."""
    n = len(events)
    target = torch.zeros(n, 12, 16, 16, 1)
    for i, count in enumerate(heavy_pixels):
        target[i, :, 0, :count] = 200.0
    context = torch.full((n, 13, 16, 16, 1), 20.0)
    forecasts = ForecastFile(path, dataset="sevir", attrs={"model": "earthformer", "frame_minutes": 5})
    forecasts.write(target * 0.5, target, context,
                    {"event_id": events, "event_type": ["Hail", "Hail", "", "Flood"],
                     "time_utc": ["2019-07-01T12:00:00"] * n, "seq_start": torch.tensor([0, 12, 0, 24])})
    return forecasts.close()


def test_activity_ranks_by_heavy_precipitation_then_peak():
    calm, storm = np.full((2, 4, 4), 100.0), np.zeros((2, 4, 4))
    storm[0, 0, 0] = 240.0
    assert activity(storm) > activity(calm)  # 100 everywhere is below the heavy threshold (133)
    assert activity(calm) > activity(np.zeros((2, 4, 4)))  # same heavy sum (0), higher peak


def test_the_most_active_samples_one_per_event(tmp_path):
    path = write_file(tmp_path / "predictions.nc", heavy_pixels=[6, 9, 1, 4], events=["S1", "S1", "R2", "S3"])
    with xr.open_dataset(path) as ds:
        assert most_active(ds, 2) == [1, 3]  # sample 0 is active too, but from the same event as sample 1
        assert most_active(ds, 5) == [1, 3, 2]  # as many events as there are
        assert sample_title(ds, 1) == ("earthformer · Hail event S1, 2019-07-01 (window from frame 12) · "
                                       "peak observed VIL 200")
        assert sample_title(ds, 2).startswith("earthformer · random event R2")


def test_columns_are_evenly_spaced_in_time_and_labelled_from_the_forecast_start():
    rows = [("input", np.zeros((13, 2, 2)), True), ("observed", np.zeros((12, 2, 2)), False)]
    assert column_picks(rows, 6) == [[2, 4, 6, 8, 10, 12], [1, 3, 5, 7, 9, 11]]  # every 10 min
    assert column_picks(rows, 12) == [list(range(1, 13)), list(range(12))]
    assert column_picks(rows, None) == [list(range(13)), list(range(12))]
    labels = [time_label(t, 13, True, 5) for t in (10, 12)] + [time_label(t, 12, False, 5) for t in (0, 11)]
    assert labels == ["-10 min", "0 min (now)", "+5 min", "+60 min"]
    assert [time_label(11, 12, True, None), time_label(0, 14, False, None)] == ["t 0", "lead 1"]


def test_plot_forecast_file_draws_the_most_active_and_animates_the_first(tmp_path):
    path = write_file(tmp_path / "predictions.nc", heavy_pixels=[6, 9, 1, 4], events=["S1", "S1", "R2", "S3"])
    paths = plot_forecast_file(path, tmp_path / "plots", n_samples=2)
    assert [p.name for p in paths] == ["sequence_0.png", "forecast.gif", "sequence_1.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    with Image.open(tmp_path / "plots" / "forecast.gif") as gif:
        assert gif.n_frames == 13 + 12  # the inputs, then the leads
        gif.seek(gif.n_frames - 1)
        assert gif.info["duration"] == 5 * 250  # the last frame is held for another second (4 frames/s)
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left


def test_rows_of_frames_and_their_animation(tmp_path):
    context, target = torch.rand(4, 8, 8, 1) * 255, torch.rand(3, 8, 8, 1) * 255
    rows = torch.rand(2, 3, 8, 8, 1) * 255
    png = plot_knowledge_rows(tmp_path / "knowledge.png", context, target, rows, ["n = -2", "n = +2"], 10)
    gif = write_rows_gif(tmp_path / "knowledge.gif", context, target, rows, ["n = -2", "n = +2"])
    sst = plot_rows(tmp_path / "sst.png", [("target", np.random.randn(14, 6, 12), False)], frame_minutes=None,
                    vil=False, max_columns=4)
    assert png.read_bytes()[:4] == b"\x89PNG" and gif.read_bytes()[:3] == b"GIF" and sst.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knowledge.gif", "knowledge.png", "sst.png"]
