"""Synthetic SEVIR / SEVIR-LR twins: real layout, determinism, split coverage, and plausible statistics."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from earthcast.data.base import SYNTHESIZERS
from earthcast.data.sevir.reader import SevirDataModule
from earthcast.data.sevir.synth import CATALOG_COLUMNS, synthesize_sevir, synthesize_sevirlr
from earthcast.errors import UserError
from tests.conftest import dataset_config

SIZE, EVENTS = 48, 30


def twin_config(root: Path, seed: int = 0, size: int = SIZE, events: int = EVENTS, **extra) -> dict:
    """configs/dataset/sevir_synth.yaml at another size, seed and event count."""
    base = dataset_config("sevir_synth")
    return {**base, "root": str(root), "height": size, "width": size, "batch_size": 4,
            "synth": {**base["synth"], "seed": seed, "n_events": events, "img_size": size, **extra}}


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return synthesize_sevir(twin_config(tmp_path_factory.mktemp("twin") / "sevir_synth"), progress=False)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _all_vil(root: Path) -> np.ndarray:
    blocks = []
    for path in sorted((root / "data").rglob("*.h5")):
        with h5py.File(path, "r") as f:
            blocks.append(f["vil"][()])
    return np.concatenate(blocks)


def test_layout_and_catalog_formats(twin: Path):
    assert SYNTHESIZERS.get("sevir") is synthesize_sevir and SYNTHESIZERS.get("sevirlr") is synthesize_sevirlr
    catalog = pd.read_csv(twin / "CATALOG.csv")
    assert list(catalog.columns) == list(CATALOG_COLUMNS)
    vil = catalog[catalog["img_type"] == "vil"]
    assert len(vil) == EVENTS and set(catalog["img_type"]) == {"vil", "ir069", "ir107", "vis"}
    assert vil["id"].is_unique and all(re.fullmatch(r"[SR]\d+", i) for i in vil["id"])
    assert all(re.fullmatch(r"vil/(\d{4})/SEVIR_VIL_(STORM|RANDOM)EVENTS_\1_\d{4}_\d{4}\.h5", f) for f in vil["file_name"])
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:00", t) for t in vil["time_utc"])
    offsets = vil["minute_offsets"].iloc[0].split(":")
    assert len(offsets) == 49 and offsets[0] == "-120" and offsets[1] == "-115" and offsets[-1] == "120"
    assert (vil["size_x"] == SIZE).all() and (vil["size_y"] == SIZE).all() and (vil["height_m"] == 384000).all()
    assert (vil["pct_missing"] == 0).all() and vil["proj"].str.startswith("+proj=laea").all()
    storms = vil[vil["id"].str.startswith("S")]
    assert storms["event_type"].notna().all() and (storms["id"] == "S" + storms["event_id"].astype(int).astype(str)).all()
    for name, rows in vil.groupby("file_name"):
        with h5py.File(twin / "data" / name, "r") as f:
            assert f["vil"].dtype == np.uint8 and f["vil"].shape == (len(rows), SIZE, SIZE, 49)
            ids = [x.decode() for x in f["id"][()]]
            assert [ids[i] for i in rows["file_index"]] == list(rows["id"])
            assert (rows["data_max"].to_numpy() == f["vil"][()].max(axis=(1, 2, 3))[rows["file_index"]]).all()
    assert not list(twin.parent.glob(".*partial*"))  # staging directory renamed away


def test_same_seed_gives_identical_files_and_another_seed_does_not(twin: Path, tmp_path: Path):
    again = synthesize_sevir(twin_config(tmp_path / "again"), progress=False)
    assert _digests(again) == _digests(twin)
    other = synthesize_sevir(twin_config(tmp_path / "other", seed=1), progress=False)
    assert not np.array_equal(_all_vil(other)[:5], _all_vil(twin)[:5])


def test_every_split_has_events(twin: Path):
    sizes = SevirDataModule(twin_config(twin)).split_sizes()
    assert all(sizes[s]["events"] > 0 for s in ("train", "val", "test"))
    assert sum(s["events"] for s in sizes.values()) == EVENTS


def test_vil_histogram_is_mostly_zero_with_a_heavy_tail(twin: Path):
    vil = _all_vil(twin)
    assert (vil == 0).mean() > 0.5
    assert 0.03 < (vil >= 16).mean() < 0.4
    assert 0 < (vil >= 219).mean() < 0.01
    assert (vil >= 74).mean() > (vil >= 133).mean() > (vil >= 181).mean() > (vil >= 219).mean()


def test_persistence_error_grows_with_lead(twin: Path):
    frames = _all_vil(twin).astype(np.float32) / 255
    last_input = frames[..., 12:13]
    mse = [float(((frames[..., 12 + lead] - last_input[..., 0]) ** 2).mean()) for lead in range(1, 13)]
    assert all(later > earlier for earlier, later in zip(mse, mse[1:]))
    assert mse[-1] > 4 * mse[0]


def test_existing_root_and_size_mismatch_are_user_errors(twin: Path, tmp_path: Path):
    with pytest.raises(UserError, match="already exists"):
        synthesize_sevir(twin_config(twin), progress=False)
    cfg = {**twin_config(tmp_path / "mismatch"), "height": 32}
    with pytest.raises(UserError, match="img_size"):
        synthesize_sevir(cfg, progress=False)
    with pytest.raises(UserError, match="n_events"):
        synthesize_sevir(twin_config(tmp_path / "tiny", events=2), progress=False)


def test_sevirlr_twin_has_the_sevirlr_layout(tmp_path: Path):
    cfg = {**twin_config(tmp_path / "sevirlr_synth", size=16, events=6), "name": "sevirlr", "in_len": 7,
           "out_len": 6, "stride": 6, "frames_per_event": 25}
    root = synthesize_sevirlr(cfg, progress=False)
    catalog = pd.read_csv(root / "CATALOG.csv")
    assert set(catalog["img_type"]) == {"vil"} and (catalog["size_x"] == 16).all()
    assert len(catalog["minute_offsets"].iloc[0].split(":")) == 25
    assert _all_vil(root).shape == (6, 16, 16, 25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sevirlr_synth"]
    datamodule = SevirDataModule(cfg)
    datamodule.setup("test")
    assert datamodule.datasets["test"][0]["inputs"].shape == (7, 16, 16, 1)


def _ensure_twin_in_child(root: str, start) -> None:
    from earthcast.data import ensure_dataset

    start.wait()  # both processes begin generating together
    ensure_dataset(twin_config(Path(root)))


def test_simultaneous_first_runs_share_one_twin(tmp_path: Path):
    """Two jobs started together on a fresh data root (a parallel multirun, two shells) both generate the
    twin; the one that publishes second uses the first one's instead of failing on the rename."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    root = tmp_path / "sevir_synth"
    start = context.Barrier(2)
    jobs = [context.Process(target=_ensure_twin_in_child, args=(str(root), start)) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert _digests(root) == _digests(synthesize_sevir(twin_config(tmp_path / "alone"), progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone", "sevir_synth"]  # no staging left behind


def test_losing_the_race_is_not_an_error_but_other_failures_are(tmp_path: Path, monkeypatch):
    from earthcast.data import synthesize

    root = tmp_path / "sevir_synth"

    def published_meanwhile(cfg, progress=True):
        root.mkdir()  # the other process's rename landed first
        raise OSError(39, "Directory not empty")

    monkeypatch.setitem(SYNTHESIZERS._entries, "sevir", published_meanwhile)
    assert synthesize(twin_config(root)) == root
    with pytest.raises(OSError, match="not empty"):  # --force asked for a new twin: losing is an error
        synthesize(twin_config(root), force=True)

    def disk_full(cfg, progress=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(SYNTHESIZERS._entries, "sevir", disk_full)
    with pytest.raises(OSError, match="No space"):
        synthesize(twin_config(tmp_path / "other"))


def test_a_twin_records_its_settings_and_refuses_others(twin: Path, caplog):
    from earthcast.data import check_twin, synthesize

    recorded = json.loads((twin / "earthcast_synth.json").read_text())
    assert recorded == {"synth": twin_config(twin)["synth"], "splits": twin_config(twin)["splits"]}
    assert synthesize(twin_config(twin)) == twin  # the same settings: kept as it is
    other = twin_config(twin)
    other["synth"] = {**other["synth"], "n_events": other["synth"]["n_events"] + 1}
    with pytest.raises(UserError, match=r"other settings \(dataset.synth.n_events: \d+ there, \d+ asked\)"):
        synthesize(other)
    (twin / "earthcast_synth.json").rename(twin / "kept.json")
    try:
        with caplog.at_level("WARNING", logger="earthcast"):
            check_twin(other)  # a twin from before the record: used, with a warning
        assert "no record of the settings" in caplog.text
    finally:
        (twin / "kept.json").rename(twin / "earthcast_synth.json")
