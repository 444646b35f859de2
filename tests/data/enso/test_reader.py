"""ICAR-ENSO reader and checker on tiny hand-written files.

Every SST value encodes where it belongs: 100·model_code + absolute month + lon/1000, and every label
100·model_code + absolute month, so folding, cropping and windowing can be checked exactly.
Model codes: CMIP6-1 → 1, CMIP6-2 → 2, CMIP5-1 → 3, CMIP5-2 → 4, SODA → 5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from earthcast.data.enso.archive import fold_records
from earthcast.data.enso.check import check_enso_root
from earthcast.data.enso.reader import EnsoDataModule
from earthcast.data.loaders import EpochShuffle
from earthcast.errors import UserError
from tests.conftest import dataset_config

LAT = np.arange(-55.0, 61.0, 5.0, dtype=np.float32)
LON = np.arange(0.0, 360.0, 5.0, dtype=np.float32)
RECORDS = 3  # per model: series of 12·2 + 36 = 60 months
SERIES = 60


def encoded_records(code: int, n_records: int) -> tuple[np.ndarray, np.ndarray]:
    month = 12 * np.arange(n_records)[:, None] + np.arange(36)[None, :]  # absolute month of each record slot
    labels = (100.0 * code + month).astype(np.float32)
    sst = labels[:, :, None, None] + (LON / 1000.0)[None, None, None, :] + 0 * LAT[None, None, :, None]
    return sst.astype(np.float32), labels


def write_root(root: Path, codes=(1, 2, 3, 4), records=RECORDS, soda_records: int | None = 4,
               extra_variables: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    groups = [("CMIP", [encoded_records(code, records) for code in codes])]
    if soda_records:
        groups.append(("SODA", [encoded_records(5, soda_records)]))
    for stem, parts in groups:
        sst = np.concatenate([p[0] for p in parts])
        nino = np.concatenate([p[1] for p in parts])
        coords = {"year": np.arange(1, len(sst) + 1), "month": np.arange(1, 37)}
        data = {"sst": (("year", "month", "lat", "lon"), sst)}
        if extra_variables:  # real files carry these; the reader must not need them
            data["t300"] = (("year", "month", "lat", "lon"), np.zeros_like(sst))
        xr.Dataset(data, coords={**coords, "lat": LAT, "lon": LON}).to_netcdf(root / f"{stem}_train.nc")
        xr.Dataset({"nino": (("year", "month"), nino)}, coords=coords).to_netcdf(root / f"{stem}_label.nc")
    return root


def config(root: Path, **overrides) -> dict:
    """configs/dataset/enso.yaml for a hand-written root: 2 CMIP6 + 2 CMIP5 models of RECORDS records."""
    return dataset_config("enso", **{
        "root": str(root), "batch_size": 4, "eval_batch_size": 8, "num_workers": 0, "seed": 0,
        "n_cmip6_models": 2, "cmip6_records": RECORDS, "n_cmip5_models": 2, "cmip5_records": RECORDS,
        "splits": {"train": {"cmip6": [1, 2], "cmip5": [1, 1]}, "val": {"cmip5": [2, 2]}, "test": {"cmip5": 2}},
        **overrides})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_root(tmp_path_factory.mktemp("enso") / "icar_enso")


@pytest.fixture(scope="module")
def datamodule(root) -> EnsoDataModule:
    dm = EnsoDataModule(config(root))
    dm.setup()
    return dm


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ---- folding ------------------------------------------------------------------------------------------
def test_fold_puts_each_record_month_at_12r_plus_k():
    records = np.arange(5)[:, None] * 12 + np.arange(36)[None, :]
    series, diff = fold_records(records.astype(np.float32), atol=0.0, where="x")
    np.testing.assert_array_equal(series, np.arange(12 * 4 + 36))
    assert diff == 0.0


def test_folded_series_hold_model_and_month(datamodule):
    for split, codes in (("train", [1, 2, 3]), ("val", [4])):
        for code, series in zip(codes, datamodule.series(split)):
            assert series.sst.shape == (SERIES, 24, 48)
            expected_month = (series.sst[:, 0, 0] - 100 * code - series.lon[0] / 1000).round()
            np.testing.assert_array_equal(expected_month, np.arange(SERIES))
            np.testing.assert_array_equal(series.nino, 100 * code + np.arange(SERIES))


def test_overlap_mismatch_names_file_model_and_record(tmp_path):
    root = write_root(tmp_path / "bad")
    with xr.open_dataset(root / "CMIP_train.nc") as ds:
        data = ds.load()
    # CMIP5-1 (file rows 6..8): its 2nd record's first month should repeat the 1st record's month 12
    data["sst"][7, 0, 3, 40] += 0.5
    data.to_netcdf(root / "CMIP_train.nc")
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(root)).setup("fit")
    message = one_line_error(excinfo)
    assert "CMIP_train.nc" in message and "CMIP5-1" in message and "record 2" in message


def test_nan_sst_is_filled_and_reported(tmp_path, caplog):
    root = write_root(tmp_path / "nan")
    with xr.open_dataset(root / "CMIP_train.nc") as ds:
        data = ds.load()
    data["sst"][0, 5, 2, 30] = np.nan  # month 5 appears in record 1 only
    data["sst"][0, 20, 2, 30] = np.nan  # month 20 also in record 2: filled from there
    data.to_netcdf(root / "CMIP_train.nc")
    dm = EnsoDataModule(config(root))
    with caplog.at_level("WARNING", logger="earthcast"):
        dm.setup("fit")
    assert f"{root / 'CMIP_train.nc'} model" in caplog.text and "1 NaN SST values" in caplog.text
    assert "read as 0 °C anomaly" in caplog.text  # never silently
    first = dm.series("train")[0]
    assert first.sst[5, 2, 30 - 19] == 0.0 and first.sst_nan == 1
    assert first.sst[20, 2, 30 - 19] == pytest.approx(100 + 20 + 0.15, abs=1e-4)
    assert dm.describe()["sst_nan_filled"] == 1


# ---- grid, splits, windows --------------------------------------------------------------------------
def test_lon_crop_keeps_exactly_95_to_330(datamodule):
    series = datamodule.series("train")[0]
    np.testing.assert_array_equal(series.lon, np.arange(95, 331, 5))
    np.testing.assert_allclose(series.sst[7, 4] - 100 - 7, series.lon / 1000, atol=1e-4)
    np.testing.assert_array_equal(series.lat, LAT)


def test_splits_are_by_model(datamodule):
    described = datamodule.describe()
    assert described["models"] == {"train": ["CMIP6-1", "CMIP6-2", "CMIP5-1"], "val": ["CMIP5-2"],
                                   "test": ["CMIP5-2"]}
    per_model = SERIES - 26 + 1
    assert described["samples"] == {"train": 3 * per_model, "val": per_model, "test": per_model}


def test_windows_never_cross_models_and_carry_metadata(datamodule):
    dataset = datamodule.dataset("train")
    assert len(dataset) == 3 * (SERIES - 26 + 1)
    stats = datamodule.norm_stats
    for item in range(len(dataset)):
        sample = dataset[item]
        frames = datamodule.units(torch.cat([sample["inputs"], sample["targets"]]))[:, 0, 0, 0].double()
        physical = frames - 95 / 1000
        code = int(torch.round(physical[0]) // 100)
        months = torch.round(physical - 100 * code)
        start = int(months[0])
        assert torch.equal(months, torch.arange(start, start + 26, dtype=months.dtype)), "window crosses models"
        assert sample["model"] == {1: "CMIP6-1", 2: "CMIP6-2", 3: "CMIP5-1"}[code]
        assert sample["init_month"] == (start + 12) % 12 + 1
        assert sample["seq_start"] == start
        expected_nino = 100 * code + np.arange(start + 12, start + 26)
        np.testing.assert_array_equal(sample["nino_target"].numpy(), expected_nino)
    assert stats == datamodule.norm_stats


def test_batch_shapes_dtypes_and_coordinates(datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["inputs"].shape == (4, 12, 24, 48, 1) and batch["inputs"].dtype == torch.float32
    assert batch["targets"].shape == (4, 14, 24, 48, 1) and batch["targets"].dtype == torch.float32
    assert batch["lat"].shape == (4, 24) and batch["lon"].shape == (4, 48)
    assert float(batch["lon"][0, 0]) == 95.0 and float(batch["lon"][0, -1]) == 330.0
    assert batch["nino_target"].shape == (4, 14)
    assert len(batch["model"]) == 4 and all(1 <= int(m) <= 12 for m in batch["init_month"])
    assert set(next(iter(datamodule.predict_dataloader()))["model"]) == {"CMIP5-2"}


def test_ddp_evaluation_shares_are_disjoint_and_read_every_window_once(datamodule, monkeypatch):
    """Under DDP each rank's val/test loader reads its own share and together they read each window exactly
    once (Lightning's default DistributedSampler pads the shares with repeats); training keeps shuffling."""
    world = 3
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: world)
    for make_loader in (datamodule.val_dataloader, datamodule.test_dataloader):
        shares = []
        for rank in range(world):
            monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, rank=rank: rank)
            shares.append(list(make_loader().sampler))
        n_windows = len(make_loader().dataset)
        assert n_windows % world != 0  # so padding would show
        assert sorted(i for share in shares for i in share) == list(range(n_windows))
        assert shares[1][:2] == [1, 1 + world]  # rank r reads r, r + W, …
    # training in one process: a new order per epoch, reproducible from (seed, epoch) on resume
    assert isinstance(datamodule.train_dataloader().sampler, EpochShuffle)


def test_soda_split(root):
    splits = {"train": {"cmip6": [1, 2]}, "val": {"cmip5": [1, 1]}, "test": "soda"}
    dm = EnsoDataModule(config(root, splits=splits))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert set(batch["model"]) == {"SODA"}
    soda_length = 12 * 3 + 36
    assert dm.describe()["samples"]["test"] == soda_length - 26 + 1
    assert float(batch["nino_target"][0, 0]) == 500 + int(batch["seq_start"][0]) + 12


def test_window_stride_and_lengths(root):
    dm = EnsoDataModule(config(root, in_len=6, out_len=6, window_stride=5))
    assert dm.describe()["samples"]["val"] == (SERIES - 12) // 5 + 1
    assert len(dm.dataset("val")) == (SERIES - 12) // 5 + 1


# ---- normalisation ----------------------------------------------------------------------------------
def test_norm_from_train_split_only_and_round_trip(datamodule):
    stats = datamodule.norm_stats
    assert stats["sst_min"] == pytest.approx(100 + 0.095, abs=1e-4)  # CMIP6-1, month 0, lon 95
    assert stats["sst_max"] == pytest.approx(300 + 59 + 0.33, abs=1e-4)  # CMIP5-1; val's CMIP5-2 excluded
    sample = datamodule.dataset("val")[0]
    units = datamodule.units  # an affine map: °C = x · (max − min) + min
    assert (units.scale, units.offset) == (stats["sst_max"] - stats["sst_min"], stats["sst_min"])
    physical = units(sample["inputs"])
    raw = torch.from_numpy(datamodule.series("val")[0].sst[:12]).unsqueeze(-1)
    torch.testing.assert_close(physical, raw, atol=1e-3, rtol=0)
    torch.testing.assert_close(units.to_model(physical), sample["inputs"], atol=1e-6, rtol=0)
    # a difference of two temperatures scales without the offset
    assert float(units.difference(torch.tensor(0.5))) == pytest.approx(0.5 * units.scale)


def test_config_norm_is_used_and_validated(root):
    dm = EnsoDataModule(config(root, norm={"sst_min": -10.0, "sst_max": 10.0}))
    assert dm.norm_stats == {"sst_min": -10.0, "sst_max": 10.0}
    assert float(dm.dataset("test")[0]["inputs"][0, 0, 0, 0]) == pytest.approx((400.095 + 10) / 20, abs=1e-5)
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(root, norm={"sst_min": 1.0, "sst_max": None}))
    assert "dataset.norm" in one_line_error(excinfo)


def test_state_dict_round_trip(root, datamodule):
    state = datamodule.state_dict()
    assert {"sst_min", "sst_max"} <= set(state) <= {"sst_min", "sst_max", "train_position"}
    other = EnsoDataModule(config(root, splits={"train": {"cmip6": [2, 2]}, "val": {"cmip5": [2, 2]},
                                                "test": {"cmip5": [2, 2]}}))
    other.load_state_dict(state)
    assert other.norm_stats == datamodule.norm_stats
    torch.testing.assert_close(other.dataset("val")[3]["targets"], datamodule.dataset("val")[3]["targets"])


def test_stats_ride_in_a_lightning_checkpoint(root, tmp_path):
    import lightning

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            return ((batch["targets"].mean() - self.weight) ** 2).sum()

        def validation_step(self, batch, _):
            self.seen = float(batch["inputs"].max())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    options = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                   limit_train_batches=1, limit_val_batches=1, max_epochs=1, default_root_dir=tmp_path)
    trained = EnsoDataModule(config(root))
    trainer = lightning.Trainer(**options)
    trainer.fit(Tiny(), datamodule=trained)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    restored = EnsoDataModule(config(root, norm={"sst_min": -1.0, "sst_max": 1.0}))
    lightning.Trainer(**options).validate(Tiny(), datamodule=restored, ckpt_path=tmp_path / "last.ckpt")
    assert restored.norm_stats == trained.norm_stats


# ---- bad input: one line naming the file or key -----------------------------------------------------
@pytest.mark.parametrize("break_it, expected", [
    (lambda r: (r / "CMIP_label.nc").unlink(), "CMIP_label.nc not found"),
    (lambda r: xr.Dataset({"tos": (("year", "month"), np.zeros((12, 36)))}).to_netcdf(r / "CMIP_label.nc"),
     "CMIP_label.nc has no variable 'nino'"),
    (lambda r: xr.Dataset({"sst": (("year", "month", "lon", "lat"), np.zeros((12, 36, 72, 24), "f4"))})
     .to_netcdf(r / "CMIP_train.nc"), "CMIP_train.nc: variable 'sst' has dims"),
    (lambda r: (r / "CMIP_train.nc").write_bytes(b"not netcdf"), "CMIP_train.nc could not be opened"),
])
def test_bad_files_raise_one_line(tmp_path, break_it, expected):
    root = write_root(tmp_path / "root", soda_records=None)
    break_it(root)
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(root)).setup("fit")
    assert expected in one_line_error(excinfo)


def test_wrong_year_count_names_the_count_keys(root):
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(root, cmip5_records=4)).setup("fit")
    message = one_line_error(excinfo)
    assert "CMIP_train.nc" in message and "12 rows" in message and "n_cmip6_models" in message


def test_missing_root_soda_and_crop(tmp_path, root):
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(tmp_path / "nowhere")).setup("fit")
    assert "dataset.root" in one_line_error(excinfo)
    no_soda = write_root(tmp_path / "no_soda", soda_records=None)
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(no_soda, splits={"train": "cmip6", "val": "cmip5", "test": "soda"})).setup("test")
    assert "SODA_train.nc not found" in one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(root, lon_range=[95, 300])).setup("fit")
    assert "dataset.lon_range" in one_line_error(excinfo)


@pytest.mark.parametrize("splits, expected", [
    ({"train": {"cmip6": [1, 2]}, "val": {"cmip6": [2, 2]}, "test": "cmip5"}, "share models (CMIP6-2)"),
    ({"train": {"cmip7": [1, 1]}}, "dataset.splits.train.cmip7"),
    ({"train": {"cmip5": [1, 3]}}, "dataset.splits.train.cmip5"),
    ({"train": {"cmip5": [2, 1]}}, "dataset.splits.train.cmip5"),
    ("cmip5", "dataset.splits must map"),
])
def test_bad_splits_raise_one_line(root, splits, expected):
    with pytest.raises(UserError) as excinfo:
        EnsoDataModule(config(root, splits=splits))
    assert expected in one_line_error(excinfo)


def test_unknown_predict_split(root):
    dm = EnsoDataModule(config(root, predict_split="holdout"))
    with pytest.raises(UserError) as excinfo:
        dm.predict_dataloader()
    assert "dataset.splits has no 'holdout'" in one_line_error(excinfo)


# ---- check ------------------------------------------------------------------------------------------
def test_check_reports_models_samples_and_folding(root):
    report = check_enso_root(config(root), progress=False)
    assert report["ok"], report["problems"]
    assert report["models"] == {"cmip6": 2, "cmip5": 2, "soda": 1}
    assert report["folding"]["models_checked"] == 5 and report["folding"]["max_overlap_diff_sst"] == 0.0
    assert report["splits"]["train"] == {"models": "CMIP6 1–2, CMIP5 1", "samples": 3 * 35,
                                         "model_names": ["CMIP6-1", "CMIP6-2", "CMIP5-1"]}
    assert report["files"]["CMIP_train.nc"]["variables"]["sst"]["shape"] == [12, 36, 24, 72]
    assert report["grid"]["lon"] == {"first": 0.0, "last": 355.0, "n": 72, "step": 5.0}


def test_check_collects_problems_instead_of_raising(tmp_path, root):
    assert not check_enso_root(config(tmp_path / "nowhere"), progress=False)["ok"]
    report = check_enso_root(config(root, n_cmip5_models=3), progress=False)
    assert not report["ok"] and "year dimension has 12 rows" in report["problems"][0]
    broken = write_root(tmp_path / "broken")
    (broken / "CMIP_label.nc").unlink()
    report = check_enso_root(config(broken), progress=False)
    assert any("CMIP_label.nc not found" in p for p in report["problems"])
