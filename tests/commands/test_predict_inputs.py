"""Forecasts from fresh observations: `earthcast predict ckpt_path=... inputs=<file>` (a gridded store's last
in_len frames, or a stored forecast file's contexts) with no targets, then `earthcast eval predictions=<that>
observations=<file>` once the observations exist; one-line errors for inputs shorter than in_len, a time axis
with gaps, a store without the variable and a grid that does not fit the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.conftest import assert_one_line_error, earthcast


@pytest.fixture(scope="module")
def fresh_inputs(gridded_data_root, tmp_path_factory):
    """The store's frames up to 2021-03-20 18:00 (a file of its own): what an operator has at that time."""
    store = gridded_data_root / "gridded_synth"
    # one file at a time (open_mfdataset would need dask, which earthcast does not depend on)
    parts = []
    for file in sorted(store.glob("*.nc")):
        with xr.open_dataset(file) as ds:
            parts.append(ds.sel(time=slice("2021-03-10", "2021-03-20")).load())
    recent = xr.concat([p for p in parts if p.sizes["time"]], dim="time", data_vars="minimal", coords="minimal",
                       compat="override")
    path = tmp_path_factory.mktemp("inputs") / "latest.nc"
    recent.to_netcdf(path)
    return path


def test_predict_from_a_gridded_store_then_score_against_later_observations(gridded_run, gridded_data_root,
                                                                            fresh_inputs, workdir):
    out = workdir / "runs" / "predict_fresh"
    earthcast("predict", f"ckpt_path={gridded_run}/checkpoints/best.ckpt", f"inputs={fresh_inputs}",
              f"hydra.run.dir={out}", cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    with xr.open_dataset(out / "predictions.nc") as ds:
        assert "target" not in ds and ds.sizes["sample"] == 1 and ds.sizes["context_time"] == 4
        assert pd.Timestamp(ds["init_time"].values[0]) == pd.Timestamp("2021-03-20 18:00")
        assert pd.Timestamp(ds["valid_time"].values[0, -1]) == pd.Timestamp("2021-03-21 18:00")
        with xr.open_dataset(fresh_inputs) as inputs:  # the context is the inputs' last frames (sea points)
            last = inputs["sst"].values[-1]
            sea = np.isfinite(last)
            np.testing.assert_allclose(ds["context"].values[0, -1][sea], last[sea], rtol=1e-5)
    scored = workdir / "runs" / "eval_fresh"
    earthcast("eval", f"predictions={out}/predictions.nc", f"observations={gridded_data_root}/gridded_synth",
              f"hydra.run.dir={scored}", cwd=workdir)
    metrics = json.loads((scored / "metrics.json").read_text())
    assert metrics["n_samples"] == 1 and np.isfinite(metrics["mse"]) and "persistence/mse" in metrics
    # scoring before the observations exist: the file's own valid times are not in the inputs
    early = earthcast("eval", f"predictions={out}/predictions.nc", f"observations={fresh_inputs}",
                      f"hydra.run.dir={workdir}/runs/eval_early", cwd=workdir, check=False)
    assert_one_line_error(early, "has no sst at 2021-03-21 00:00:00", "score once the observations exist")


def test_predict_from_a_stored_forecast_files_contexts(trained_run, workdir):
    source = trained_run / "predictions.nc"
    out = workdir / "runs" / "predict_contexts"
    earthcast("predict", f"ckpt_path={trained_run}/checkpoints/best.ckpt", f"inputs={source}",
              f"hydra.run.dir={out}", cwd=workdir)
    with xr.open_dataset(out / "predictions.nc") as ds, xr.open_dataset(source) as before:
        assert "target" not in ds and ds.sizes["sample"] == before.sizes["sample"]
        # the same checkpoint on the same contexts: the forecasts the test after training stored
        np.testing.assert_allclose(ds["prediction"].values, before["prediction"].values, atol=1e-3)
        assert (ds["init_time"].values == before["init_time"].values).all()
    scored = workdir / "runs" / "eval_contexts"
    earthcast("eval", f"predictions={out}/predictions.nc", f"observations={source}", f"hydra.run.dir={scored}",
              cwd=workdir)
    assert json.loads((scored / "metrics.json").read_text())["n_samples"] == 4


def _store(path, n_frames, size=16, variable="sst", drop=()):
    times = pd.date_range("2021-05-01", periods=n_frames, freq="6h").delete(list(drop))
    values = np.full((len(times), size, size), 290.0, dtype=np.float32)
    xr.Dataset({variable: (("time", "lat", "lon"), values)},
               coords={"time": times, "lat": np.arange(size) * 1.0, "lon": np.arange(size) * 1.0}).to_netcdf(path)
    return path


@pytest.mark.parametrize("name, store, fragments", [
    ("short", dict(n_frames=3), ["holds 3 frames of sst, shorter than the checkpoint's in_len=4"]),
    ("gappy", dict(n_frames=8, drop=[5]), ["not evenly spaced", "give 4 consecutive frames"]),
    ("novar", dict(n_frames=8, variable="t2m"), ["has no variable 'sst'", "t2m", "set inputs_variable"]),
    ("grid", dict(n_frames=8, size=12), ["the grid is 12×12", "trained on 16×16"]),
])
def test_bad_inputs_get_one_line_errors(gridded_run, workdir, tmp_path, name, store, fragments):
    path = _store(tmp_path / f"{name}.nc", **store)
    result = earthcast("predict", f"ckpt_path={gridded_run}/checkpoints/best.ckpt", f"inputs={path}",
                       f"hydra.run.dir={tmp_path}/run", cwd=workdir, check=False)
    assert_one_line_error(result, f"{path}", *fragments)
    assert not (tmp_path / "run" / "predictions.nc").exists()
