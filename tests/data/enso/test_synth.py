"""The synthetic ENSO twin: real layout, deterministic, consistent labels, and ENSO-like statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from omegaconf import OmegaConf

from earthcast.data.base import SYNTHESIZERS
from earthcast.data.enso.archive import forward_running_mean, nino34_box_mean
from earthcast.data.enso.check import check_enso_root, index_statistics
from earthcast.data.enso.reader import EnsoDataModule
from earthcast.data.enso.synth import simulate_model, synthesize_enso
from earthcast.errors import UserError
from tests.conftest import dataset_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "dataset"
SMALL = {"n_cmip6_models": 2, "cmip6_records": 4, "n_cmip5_models": 3, "cmip5_records": 5, "soda_records": 3}
#: the shipped physics (configs/dataset/enso_synth.yaml)
PHYSICS = dataset_config("enso_synth")["synth"]


def twin_config(root: Path, **synth) -> dict:
    """configs/dataset/enso_synth.yaml at a smaller size and another seed."""
    counts = {**SMALL, **synth}
    return dataset_config("enso_synth", **{
        "root": str(root), "batch_size": 8, "num_workers": 0, "seed": 0,
        **{key: counts[key] for key in ("n_cmip6_models", "cmip6_records", "n_cmip5_models", "cmip5_records")},
        "splits": {"train": {"cmip6": [1, 2], "cmip5": [1, 1]}, "val": {"cmip5": [2, 2]},
                   "test": {"cmip5": [3, 3]}},
        "synth": {**PHYSICS, "seed": 7, **counts},
    })


def read_variable(path: Path, variable: str) -> np.ndarray:
    with xr.open_dataset(path) as ds:
        return ds[variable].values


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return synthesize_enso(twin_config(tmp_path_factory.mktemp("synth") / "enso_synth"), progress=False)


def test_registered_and_returns_root(twin):
    assert SYNTHESIZERS.get("enso") is synthesize_enso
    assert sorted(p.name for p in twin.iterdir()) == ["CMIP_label.nc", "CMIP_train.nc", "SODA_label.nc",
                                                      "SODA_train.nc", "earthcast_synth.json"]
    # the settings that shaped the files, against which a later run's dataset.synth is checked
    assert json.loads((twin / "earthcast_synth.json").read_text()) == {"synth": twin_config(twin)["synth"]}


def test_exact_layout(twin):
    rows = 2 * 4 + 3 * 5
    with xr.open_dataset(twin / "CMIP_train.nc") as train, xr.open_dataset(twin / "CMIP_label.nc") as label:
        for name in ("sst", "t300", "ua", "va"):
            assert train[name].dims == ("year", "month", "lat", "lon")
            assert train[name].shape == (rows, 36, 24, 72) and train[name].dtype == np.float32
        np.testing.assert_array_equal(train["lat"], np.arange(-55, 61, 5))
        np.testing.assert_array_equal(train["lon"], np.arange(0, 360, 5))
        assert label["nino"].dims == ("year", "month") and label["nino"].shape == (rows, 36)
        assert label["nino"].dtype == np.float32
        assert np.isfinite(train["sst"].values).all()
    with xr.open_dataset(twin / "SODA_train.nc") as soda:
        assert soda["sst"].shape == (3, 36, 24, 72)


def test_deterministic_and_seeded(tmp_path, twin):
    again = synthesize_enso(twin_config(tmp_path / "again"), progress=False)
    other = synthesize_enso(twin_config(tmp_path / "other", seed=8), progress=False)
    for name, variable in (("CMIP_train.nc", "sst"), ("CMIP_label.nc", "nino"), ("CMIP_train.nc", "t300")):
        first, second, reseeded = (read_variable(path / name, variable) for path in (twin, again, other))
        np.testing.assert_array_equal(first, second)
        assert not np.array_equal(first, reseeded)
    assert not list(tmp_path.glob(".*tmp*")), "temporary build directory left behind"


def test_regenerating_in_place_replaces_files(tmp_path):
    root = synthesize_enso(twin_config(tmp_path / "twin", soda_records=0), progress=False)
    assert not (root / "SODA_train.nc").exists()
    synthesize_enso(twin_config(root, seed=9, soda_records=0), progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["CMIP_label.nc", "CMIP_train.nc", "earthcast_synth.json"]
    assert json.loads((root / "earthcast_synth.json").read_text())["synth"]["seed"] == 9


def test_labels_are_forward_three_month_means_of_the_written_box(twin):
    report = check_enso_root(twin_config(twin), progress=False)
    assert report["ok"], report["problems"]
    assert report["folding"]["max_overlap_diff_sst"] == 0.0 and report["folding"]["max_overlap_diff_nino"] == 0.0
    assert report["label_convention"]["best"].startswith("forward")
    dm = EnsoDataModule(twin_config(twin))
    with xr.open_dataset(twin / "CMIP_train.nc") as ds:  # the box from the full, uncropped grid
        sst, lat, lon = ds["sst"].values, ds["lat"].values, ds["lon"].values
    for split in ("train", "val", "test"):
        for series in dm.series(split):
            records = sst[series.slot.first_row:series.slot.first_row + series.slot.n_records]
            box = np.concatenate([nino34_box_mean(records[0], lat, lon)]
                                 + [nino34_box_mean(r[24:], lat, lon) for r in records[1:]])
            np.testing.assert_allclose(box, nino34_box_mean(series.sst, series.lat, series.lon), atol=1e-5)
            np.testing.assert_allclose(series.nino[:-2], forward_running_mean(box), atol=1e-5)


def test_reader_serves_the_twin(twin):
    dm = EnsoDataModule(twin_config(twin))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (8, 12, 24, 48, 1)
    assert 0.0 <= float(batch["inputs"].min()) and float(batch["inputs"].max()) <= 1.0
    lengths = {4: 12 * 3 + 36, 5: 12 * 4 + 36}  # months per model for 4 and 5 records
    per_model = {records: months - 26 + 1 for records, months in lengths.items()}
    assert dm.describe()["samples"] == {"train": 2 * per_model[4] + per_model[5], "val": per_model[5],
                                        "test": per_model[5]}


def test_spatial_pattern_is_equatorial_pacific(twin):
    with xr.open_dataset(twin / "CMIP_train.nc") as ds:
        sst = ds["sst"].isel(month=slice(0, 12)).values.reshape(-1, 24, 72)
    nino = nino34_box_mean(sst, np.arange(-55, 61, 5), np.arange(0, 360, 5))
    anomalies = sst - sst.mean(axis=0)
    regression = np.tensordot(nino - nino.mean(), anomalies, axes=(0, 0)) / ((nino - nino.mean()) ** 2).sum()
    lat, lon = np.arange(-55, 61, 5), np.arange(0, 360, 5)
    peak_lat, peak_lon = np.unravel_index(np.argmax(regression), regression.shape)
    assert abs(lat[peak_lat]) <= 5 and 180 <= lon[peak_lon] <= 260
    equatorial = regression[np.abs(lat) <= 5].mean()
    assert regression[np.abs(lat) >= 25].__abs__().mean() < 0.3 * equatorial


@pytest.fixture(scope="module")
def long_runs() -> list[np.ndarray]:
    """Six models × 100 records (about 100 years each) with the default physics."""
    return [simulate_model(100, np.random.default_rng([2021, number]), PHYSICS)["nino"] for number in range(6)]


def test_spectral_peak_in_three_to_seven_years(long_runs):
    assert 3.0 <= index_statistics(long_runs)["spectral_peak_years"] <= 7.0


def test_events_lock_to_boreal_winter(long_runs):
    stats = index_statistics(long_runs)
    assert stats["winter_peak_fraction"] > 0.45  # 0.25 without phase locking
    assert int(np.argmax(stats["std_by_month"])) in (10, 11, 0)  # variability largest in Nov–Jan
    assert int(np.argmin(stats["std_by_month"])) in (3, 4, 5, 6)  # and smallest in late spring


def test_persistence_decays_with_lead(long_runs):
    persistence = index_statistics(long_runs, leads=(1, 3, 6, 9, 12))["persistence"]
    values = [persistence[lead] for lead in (1, 3, 6, 9, 12)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0.9 and persistence[6] < 0.75 and persistence[12] < 0.3


def test_synth_config_composes_with_the_reader(tmp_path):
    base = OmegaConf.load(CONFIGS / "enso.yaml")
    synth = OmegaConf.load(CONFIGS / "enso_synth.yaml")
    assert list(synth.pop("defaults")) == ["enso", "_self_"]
    composed = OmegaConf.merge({"paths": {"data_root": str(tmp_path)}, "seed": 3},
                               {"dataset": OmegaConf.merge(base, synth)})
    dataset = composed.dataset
    for key in ("name", "root", "in_len", "out_len", "height", "width", "channels", "frame_minutes", "batch_size",
                "eval_batch_size", "num_workers", "splits", "norm", "predict_split", "seed"):
        assert key in dataset, key
    assert dataset.root == str(tmp_path / "enso_synth") and dataset.seed == 3
    assert dataset.n_cmip5_models == dataset.synth.n_cmip5_models == 5
    assert dataset.splits.test.cmip5 == [5, 5]
    real = OmegaConf.merge({"paths": {"data_root": "/d"}, "seed": 1}, {"dataset": base}).dataset
    assert real.root == "/d/icar_enso" and real.n_cmip6_models * real.cmip6_records == 2265


def test_bad_synth_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="dataset.synth.cmip5_records"):
        synthesize_enso(twin_config(tmp_path / "x", cmip5_records=0), progress=False)
    assert not (tmp_path / "x").exists()
