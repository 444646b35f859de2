"""evaluate_stored on small netCDF files in both schemas, and its user errors."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from earthcast.errors import UserError
from earthcast.metrics import EnsoEvaluator, SevirEvaluator
from earthcast.metrics.stored import evaluate_stored

SEVIR_TYPES = ["Hail", "Tornado", "", "Hail", "Heavy Rain"]


def _sevir_dataset(members=0, dataset="sevir", seed=0):
    rng = np.random.default_rng(seed)
    n, t, h, w = 5, 3, 6, 7
    target = (rng.random((n, t, h, w)) ** 2 * 255).astype(np.float32)
    shape = (n, members, t, h, w) if members else (n, t, h, w)
    pred = np.clip(target.reshape(n, *([1] if members else []), t, h, w) + rng.normal(0, 40, shape), 0, 255)
    dims = ("sample", "member", "lead_time", "y", "x") if members else ("sample", "lead_time", "y", "x")
    return xr.Dataset(
        {
            "prediction": (dims, pred.astype(np.float32)),
            "target": (("sample", "lead_time", "y", "x"), target),
            "context": (("sample", "context_time", "y", "x"), (rng.random((n, 2, h, w)) * 255).astype(np.float32)),
            "event_type": (("sample",), np.array(SEVIR_TYPES, dtype=object)),
        },
        attrs={"dataset": dataset},
    )


def _enso_dataset(members=3, seed=1):
    rng = np.random.default_rng(seed)
    n, t = 6, 14
    lat = np.arange(10.0, -11.0, -5.0)  # descending
    lon = np.array([-175.0, -170.0, -145.0, -120.0, -115.0])  # −180–180
    target = rng.normal(size=(n, t, 5, 5)).astype(np.float32)
    pred = target[:, None] + rng.normal(0, 0.5, (n, members, t, 5, 5)).astype(np.float32)
    return xr.Dataset(
        {
            "prediction": (("sample", "member", "lead_time", "lat", "lon"), pred),
            "target": (("sample", "lead_time", "lat", "lon"), target),
            "context": (("sample", "context_time", "lat", "lon"), rng.normal(size=(n, 12, 5, 5)).astype(np.float32)),
            "init_month": (("sample",), np.array([1, 2, 2, 5, 12, 1], dtype=np.int32)),
        },
        coords={"lat": lat, "lon": lon},
        attrs={"dataset": "enso"},
    )


def _direct(evaluator, dataset, samples=None, meta_extra=None):
    """Score the same data in one in-memory update for comparison."""
    if samples is not None:
        dataset = dataset.isel(sample=samples)
    member = ["member"] if "member" in dataset["prediction"].dims else []
    grid = [d for d in dataset["target"].dims if d not in ("sample", "lead_time")]
    pred = torch.from_numpy(dataset["prediction"].transpose("sample", *member, "lead_time", *grid).values)
    meta = dict(meta_extra or {})
    if "event_type" in dataset:
        meta["event_type"] = list(dataset["event_type"].values)
    if "init_month" in dataset:
        meta["init_month"] = torch.from_numpy(dataset["init_month"].values.astype(np.int64))
    evaluator.update(pred, torch.from_numpy(dataset["target"].values),
                     context=torch.from_numpy(dataset["context"].values), meta=meta)
    return evaluator.compute(), evaluator.compute_by_lead(), evaluator.compute_by_group()


def _assert_same(stored, direct):
    metrics, by_lead, by_group = stored
    expected_metrics, expected_lead, expected_group = direct
    assert metrics.keys() == expected_metrics.keys()
    for key, value in expected_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    pd.testing.assert_frame_equal(by_lead, expected_lead, rtol=1e-9)
    pd.testing.assert_frame_equal(by_group, expected_group, rtol=1e-9)


def test_sevir_deterministic_in_chunks(tmp_path):
    dataset = _sevir_dataset()
    path = tmp_path / "forecast.nc"
    dataset.to_netcdf(path)
    stored = evaluate_stored(path, chunk_size=2)  # chunks of 2, 2, 1 samples
    _assert_same(stored, _direct(SevirEvaluator(frame_minutes=5), dataset))
    metrics, by_lead, by_group = stored
    assert metrics["n_samples"] == 5 and metrics["persistence/n_samples"] == 5
    assert by_lead["lead_minutes"].tolist() == [5, 10, 15]
    assert sorted(by_group["group"]) == ["Hail", "Heavy Rain", "Tornado", "unlabeled"]


def test_sevirlr_ensemble_any_dim_order(tmp_path):
    dataset = _sevir_dataset(members=3, dataset="sevirlr")
    path = tmp_path / "ensemble.nc"
    dataset.transpose("member", "sample", "lead_time", "x", "y", ...).to_netcdf(path)  # order must not matter
    stored = evaluate_stored(path, chunk_size=3)
    _assert_same(stored, _direct(SevirEvaluator(frame_minutes=10), dataset))
    metrics, by_lead, _ = stored
    assert {"crps", "spread_skill_ratio", "rank_hist_0", "rank_hist_3"} <= metrics.keys()
    assert by_lead["lead_minutes"].tolist() == [10, 20, 30]


def test_enso_ensemble_with_signed_longitudes(tmp_path):
    dataset = _enso_dataset()
    path = tmp_path / "enso.nc"
    dataset.to_netcdf(path)
    stored = evaluate_stored(path, chunk_size=4)
    meta = {"lat": torch.tensor(dataset["lat"].values), "lon": torch.tensor(dataset["lon"].values)}
    _assert_same(stored, _direct(EnsoEvaluator(), dataset, meta_extra=meta))
    metrics, by_lead, by_group = stored
    assert "nino34_corr_lead12" in metrics and metrics["climatology/mse"] is not None
    assert by_group["group"].tolist() == [1, 2, 5, 12]


def test_evaluator_config_overrides_the_dataset_attribute(tmp_path):
    dataset = _sevir_dataset()
    del dataset.attrs["dataset"]
    path = tmp_path / "plain.nc"
    dataset.to_netcdf(path)
    metrics, by_lead, _ = evaluate_stored(path, {"name": "sevir", "thresholds": [74], "reference": False})
    assert "csi_74" in metrics and "csi_16" not in metrics and "persistence/csi_m" not in metrics
    assert "lead_minutes" not in by_lead


def test_nan_policy(tmp_path):
    dataset = _sevir_dataset()
    dataset["prediction"][1, 0, 0, 0] = np.nan
    dataset["prediction"][1, 2, 3, 3] = np.nan
    dataset["target"][3, 1, 2, 2] = np.inf
    path = tmp_path / "nan.nc"
    dataset.to_netcdf(path)
    message = r"3 NaN/inf values in 2 of 5 samples \(prediction: 2, target: 1; first at sample 1\)"
    with pytest.raises(UserError, match=message):
        evaluate_stored(path, chunk_size=2)
    metrics, by_lead, by_group = evaluate_stored(path, chunk_size=2, nan_policy="exclude")
    assert metrics.pop("n_samples_excluded") == 2
    _assert_same((metrics, by_lead, by_group), _direct(SevirEvaluator(frame_minutes=5), dataset, [0, 2, 4]))


def test_all_samples_nan(tmp_path):
    dataset = _sevir_dataset().isel(sample=[0])
    dataset["target"][:] = np.nan
    path = tmp_path / "all_nan.nc"
    dataset.to_netcdf(path)
    with pytest.raises(UserError, match="no samples left"):
        evaluate_stored(path, nan_policy="exclude")


def _written(tmp_path, dataset, name="bad.nc"):
    path = tmp_path / name
    dataset.to_netcdf(path)
    return path


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        evaluate_stored(tmp_path / "missing.nc")
    text = tmp_path / "notes.nc"
    text.write_text("not a netCDF file")
    with pytest.raises(UserError, match="cannot read"):
        evaluate_stored(text)
    with pytest.raises(UserError, match="nan_policy"):
        evaluate_stored(text, nan_policy="ignore")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ds: ds.drop_vars("target"), "no variable 'target'"),
        (lambda ds: ds.rename({"lead_time": "time"}), "expected \\(sample, \\[member,\\] lead_time, <y>, <x>\\)"),
        (lambda ds: ds.assign(prediction=ds["prediction"].rename({"y": "row"})), "prediction must have"),
        (lambda ds: ds.assign(context=ds["context"].isel(y=0)), "'context' has dims"),
        (lambda ds: ds.assign(event_type=ds["context"]), "'event_type' has dims"),
        (lambda ds: ds.drop_attrs(), "no global attribute 'dataset'"),
        (lambda ds: ds.assign_attrs(dataset="radar"), "dataset 'radar' has no default evaluator"),
        (lambda ds: ds.assign_attrs(dataset="enso"), "ENSO evaluation needs dims \\(lat, lon\\)"),
        (lambda ds: ds.isel(sample=slice(0, 0)), "has no samples"),
    ],
)
def test_layout_errors(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        evaluate_stored(_written(tmp_path, change(_sevir_dataset())))


def test_enso_needs_coordinates_and_valid_months(tmp_path):
    with pytest.raises(UserError, match="no coordinate values"):
        evaluate_stored(_written(tmp_path, _enso_dataset().drop_vars("lon"), "nolon.nc"))
    bad_months = _enso_dataset().assign(init_month=("sample", np.array([1, 2, 3, 4, 5, 13])))
    with pytest.raises(UserError, match="'init_month' must hold calendar months"):
        evaluate_stored(_written(tmp_path, bad_months, "months.nc"))


@pytest.mark.parametrize("scale,offset,what", [(4.0, -2.0, "outside the VIL levels 0–255"),
                                               (1.0, 0.0, "under 1% of the VIL levels 0–255")])
def test_values_in_other_units_warn_or_fail(tmp_path, caplog, scale, offset, what):
    dataset = _sevir_dataset()
    for name in ("prediction", "target", "context"):
        dataset[name] = dataset[name] / 255.0 * scale + offset
    path = tmp_path / "other_units.nc"
    dataset.to_netcdf(path)
    with caplog.at_level("WARNING", logger="earthcast"):
        metrics, _, _ = evaluate_stored(path)  # warn: scored, and said
    assert metrics["n_samples"] == 5 and what in caplog.text and "range_policy=fail" in caplog.text
    with pytest.raises(UserError, match=what):
        evaluate_stored(path, range_policy="fail")


def test_values_in_the_evaluators_units_pass_silently(tmp_path, caplog):
    _sevir_dataset().to_netcdf(tmp_path / "vil.nc")
    _enso_dataset().to_netcdf(tmp_path / "sst.nc")
    with caplog.at_level("WARNING", logger="earthcast"):
        evaluate_stored(tmp_path / "vil.nc", range_policy="fail")
        evaluate_stored(tmp_path / "sst.nc", range_policy="fail")
    assert "warning" not in caplog.text
