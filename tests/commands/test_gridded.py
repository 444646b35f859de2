"""dataset=gridded through the command line: the example store generated and checked, the UNet and an
Earthformer trained and tested on it (masked scores, normalisation in the checkpoint), and the one-line errors
for a store without the variable and a time axis with gaps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
import xarray as xr

from tests.conftest import TINY_GRIDDED, TINY_TRAIN, assert_one_line_error, earthcast


def test_data_check_reports_the_example_store(workdir, gridded_data_root):
    result = earthcast("data", "check", *TINY_GRIDDED, f"paths.data_root={gridded_data_root}", cwd=workdir)
    assert "nan_fraction" in result.stdout and "time_step 6h" in result.stdout and "gaps 0" in result.stdout


def test_unet_trains_and_tests_on_the_store(gridded_run):
    metrics = json.loads((gridded_run / "metrics.json").read_text())
    assert metrics["n_samples"] == 8 and np.isfinite([metrics["mse"], metrics["persistence/mse"]]).all()
    ckpt = torch.load(gridded_run / "checkpoints" / "best.ckpt", weights_only=True)
    # normalisation fitted on train and the frame interval, kept for eval and predict
    assert set(ckpt["GriddedDataModule"]) == {"mean", "std", "step_minutes"}
    assert ckpt["GriddedDataModule"]["step_minutes"] == 360
    with xr.open_dataset(gridded_run / "predictions.nc") as ds:
        land = np.isnan(ds["target"].values[0, 0])
        assert 0 < land.mean() < 0.5  # the masked continent is missing in the stored observations


def test_an_earthformer_trains_on_the_store(workdir, gridded_data_root):
    run_dir = workdir / "runs" / "gridded_earthformer"
    earthcast("train", *TINY_GRIDDED, *TINY_TRAIN[3:], "model=earthformer", "model.base_units=8", "model.num_heads=2",
              "model.stem_dims=[4,8]", "outputs.plot_samples=0", f"paths.data_root={gridded_data_root}",
              f"hydra.run.dir={run_dir}", cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_samples"] == 8 and np.isfinite(metrics["mse"])


def _store(path, times, variable="t2m"):
    values = np.random.default_rng(0).normal(size=(len(times), 8, 8)).astype(np.float32)
    xr.Dataset({variable: (("time", "lat", "lon"), values)},
               coords={"time": times, "lat": np.arange(8.0), "lon": np.arange(8.0)}).to_netcdf(path)
    return path


def test_bad_stores_get_one_line_errors(workdir, tmp_path):
    args = ["dataset=gridded", "evaluator=gridded", "dataset.variable=t2m", "dataset.height=8", "dataset.width=8",
            "dataset.in_len=2", "dataset.out_len=2", "dataset.num_workers=0", *TINY_TRAIN,
            "dataset.splits.train=[null,'2020-01-05']", "dataset.splits.val=['2020-01-05','2020-01-08']",
            "dataset.splits.test=['2020-01-08',null]", f"hydra.run.dir={tmp_path}/run"]
    times = pd.date_range("2020-01-01", periods=40, freq="6h")
    store = _store(tmp_path / "other.nc", times, variable="sst")
    result = earthcast("train", *args, f"dataset.path={store}", cwd=workdir, check=False)
    assert_one_line_error(result, "has no variable 't2m'", "sst", "dataset.variable")
    gappy = _store(tmp_path / "gappy.nc", times.delete([10, 11]))
    result = earthcast("train", *args, f"dataset.path={gappy}", cwd=workdir, check=False)
    assert_one_line_error(result, "gap(s)", "between 2020-01-03 06:00:00 and 2020-01-04 00:00:00", "dataset.allow_gaps=true")
    assert not (tmp_path / "run" / "checkpoints").exists()
