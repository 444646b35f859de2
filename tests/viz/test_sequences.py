"""Sequence figures and the forecast animation: the most active samples, one per event, each with its own title."""

import numpy as np
import torch
import xarray as xr
from PIL import Image

from earthcast.data.predictions import PredictionWriter
from earthcast.viz.sequences import activity, most_active, plot_forecast_file, sample_title


def write_file(path, heavy_pixels, events):
    """A stored forecast file whose sample i has heavy_pixels[i] pixels of VIL 200 in every target frame."""
    n = len(events)
    target = torch.zeros(n, 12, 16, 16, 1)
    for i, count in enumerate(heavy_pixels):
        target[i, :, 0, :count] = 200.0
    context = torch.full((n, 13, 16, 16, 1), 20.0)
    writer = PredictionWriter(path, dataset="sevir", attrs={"model": "earthformer", "frame_minutes": 5})
    writer.write(target * 0.5, target, context,
                 {"event_id": events, "event_type": ["Hail", "Hail", "", "Flood"],
                  "time_utc": ["2019-07-01T12:00:00"] * n, "seq_start": torch.tensor([0, 12, 0, 24])})
    return writer.close()


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


def test_plot_forecast_file_draws_the_most_active_and_animates_the_first(tmp_path):
    path = write_file(tmp_path / "predictions.nc", heavy_pixels=[6, 9, 1, 4], events=["S1", "S1", "R2", "S3"])
    paths = plot_forecast_file(path, tmp_path / "plots", n_samples=2)
    assert [p.name for p in paths] == ["sequence_0.png", "forecast.gif"] + ["sequence_1.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    with Image.open(tmp_path / "plots" / "forecast.gif") as gif:
        assert gif.n_frames == 13 + 12  # the inputs, then the leads
        gif.seek(gif.n_frames - 1)
        assert gif.info["duration"] == 5 * 250  # the last frame is held for another second (4 frames/s)
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left
