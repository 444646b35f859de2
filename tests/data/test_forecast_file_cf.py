"""Forecast and score files that other tools read: CF-1.10 as xarray's decode_cf, cf_xarray and the IOOS
compliance checker (PyPI `compliance-checker`, CF 1.10 suite) see them, for SEVIR-like, gridded and ENSO
forecasts; files in the earlier layout (no CF coordinates) are still scored."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from earthcast.data.base import ForecastLayout
from earthcast.data.forecast_file import CONVENTIONS, ForecastFile
from earthcast.metrics.stored import evaluate_stored

needs_cf_xarray = pytest.mark.skipif(importlib.util.find_spec("cf_xarray") is None,
                                     reason="cf_xarray is not installed (pip install 'earthcast[cf]')")
needs_checker = pytest.mark.skipif(importlib.util.find_spec("compliance_checker") is None,
                                   reason="compliance-checker is not installed (pip install 'earthcast[cf]')")


def cf_errors(path, tmp_path) -> list[str]:
    """What the CF-1.10 checker reports as errors (high and medium priority), empty when compliant."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    report_path = tmp_path / f"{path.parent.name}_{path.stem}.json"
    ComplianceChecker.run_checker(str(path), ["cf:1.10"], 0, "normal", output_filename=str(report_path),
                                  output_format="json")
    report = json.loads(report_path.read_text())["cf:1.10"]
    return [f"{issue['name']}: {issue['msgs']}" for level in ("high_priorities", "medium_priorities")
            for issue in report[level] if issue["value"][0] < issue["value"][1]]


def enso_file(tmp_path):
    """An ENSO-like ensemble: lat/lon with every batch, leads in months, no times."""
    path = tmp_path / "enso.nc"
    writer = ForecastFile(path, "enso", layout=ForecastLayout(grid=("lat", "lon"), lead_units="month",
                                                              variable={"units": "K", "long_name": "SST anomaly"}))
    meta = {"lat": torch.linspace(-55, 60, 4).expand(2, 4), "lon": torch.linspace(95, 330, 5).expand(2, 5),
            "init_month": torch.tensor([1, 7])}
    writer.write(torch.rand(2, 3, 6, 4, 5, 1), torch.rand(2, 6, 4, 5, 1), torch.rand(2, 4, 4, 5, 1), meta)
    return writer.close()


def check_axes(path, grid_x: str, grid_y: str, times: bool):
    pytest.importorskip("cf_xarray")
    with xr.open_dataset(path, decode_times=False, decode_timedelta=False) as raw:
        assert raw.attrs["Conventions"] == CONVENTIONS
        ds = xr.decode_cf(raw, decode_timedelta=True)
        assert ds.cf.axes["X"] == [grid_x] and ds.cf.axes["Y"] == [grid_y]
        assert ds.cf["forecast_period"].name == "lead_time"
        if times:
            assert np.issubdtype(ds["lead_time"].dtype, np.timedelta64)
            assert ds.cf["forecast_reference_time"].name == "init_time"
            assert np.issubdtype(ds["valid_time"].dtype, np.datetime64)
            np.testing.assert_array_equal(ds["valid_time"].values, ds["init_time"].values[:, None] +
                                          ds["lead_time"].values[None, :])
        return ds


@needs_cf_xarray
def test_gridded_forecasts_are_cf(gridded_run):
    ds = check_axes(gridded_run / "predictions.nc", "lon", "lat", times=True)
    assert ds["lead_time"].values[0] == np.timedelta64(6, "h")  # the store's step
    assert ds["prediction"].attrs["standard_name"] == "sea_surface_temperature" and ds["prediction"].units == "K"
    assert ds.cf["latitude"].name == "lat" and ds.attrs["variable"] == "sst"


@needs_cf_xarray
def test_sevir_forecasts_are_cf(trained_run):
    ds = check_axes(trained_run / "predictions.nc", "x", "y", times=True)
    assert ds["x"].units == "km" and ds["x"].values[-1] == pytest.approx(384 - 384 / ds.sizes["x"] / 2)
    assert ds["prediction"].units == "1" and "VIL" in ds["prediction"].long_name
    assert ds["lead_time"].values[0] == np.timedelta64(5, "m")
    assert {"llcrnrlat", "llcrnrlon", "urcrnrlat", "urcrnrlon"} <= set(ds.variables)
    event_time = pd.Timestamp(str(ds["time_utc"].values[0]))
    # SEVIR's frame offsets run −120 … +120 minutes around time_utc: init = offset of the last input frame
    offset = -120 + 5 * (int(ds["seq_start"].values[0]) + ds.sizes["context_time"] - 1)
    assert pd.Timestamp(ds["init_time"].values[0]) == event_time + pd.Timedelta(minutes=offset)


@needs_cf_xarray
def test_ensembles_mark_their_members(tmp_path):
    ds = check_axes(enso_file(tmp_path), "lon", "lat", times=False)
    assert ds.cf["realization"].name == "member" and ds["lead_time"].units == "month"


@needs_checker
def test_the_cf_checker_finds_no_errors(tmp_path, gridded_run, trained_run):
    for path in (gridded_run / "predictions.nc", gridded_run / "metrics.nc", trained_run / "predictions.nc",
                 trained_run / "metrics.nc", enso_file(tmp_path)):
        assert cf_errors(path, tmp_path) == [], path


def test_metrics_nc_holds_the_by_lead_table(gridded_run):
    table = pd.read_csv(gridded_run / "metrics_by_lead.csv")
    with xr.open_dataset(gridded_run / "metrics.nc") as ds:
        scores = ds.set_index(metric="metric_name")["score"]
        np.testing.assert_allclose(scores.sel(metric="mse").values, table["mse"].values)
        assert ds["lead_time"].values[1] == np.timedelta64(12, "h")


def test_files_in_the_earlier_layout_are_still_scored(tmp_path):
    """earthcast-forecast-1 before CF: no coordinates, units 'VIL (0-255)', the categorical score then
    called bias is frequency_bias now."""
    values = np.zeros((2, 3, 4, 4), dtype=np.float32)
    values[:, :, :2] = 200
    old = xr.Dataset({name: (("sample", "lead_time", "y", "x"), values, {"units": "VIL (0-255)"})
                      for name in ("prediction", "target")}, attrs={"dataset": "sevir",
                                                                     "Conventions": "earthcast-forecast-1"})
    old.to_netcdf(tmp_path / "old.nc")
    metrics, by_lead, _ = evaluate_stored(tmp_path / "old.nc")
    assert metrics["csi_16"] == 1.0 and metrics["frequency_bias_16"] == 1.0 and len(by_lead) == 3
