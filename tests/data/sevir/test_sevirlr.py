"""SEVIR-LR builder on hand-written SEVIR roots: max pooling, every 2nd frame, catalog, resume, atomicity."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from earthcast.data.sevir import sevirlr
from earthcast.data.sevir.reader import SevirDataModule
from earthcast.data.sevir.sevirlr import build_sevirlr, downsample_events
from earthcast.errors import UserError
from tests.data.sevir.conftest import FILE_A, FILE_B, config, event_frames, standard_rows, write_root


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_root(tmp_path / "sevir", standard_rows())


def test_pooling_is_max_over_3x3_of_every_second_frame():
    block = np.zeros((1, 6, 6, 5), np.uint8)
    block[0, 0, 0, :] = 200  # one hot pixel per 3×3 block: max 200, mean 22
    block[0, 4, 5, :] = [10, 20, 30, 40, 50]
    pooled = downsample_events(block)
    assert pooled.shape == (1, 2, 2, 3)
    assert pooled[0, 0, 0].tolist() == [200, 200, 200]
    assert pooled[0, 1, 1].tolist() == [10, 30, 50]  # frames 0, 2, 4
    assert pooled[0, 0, 1].tolist() == pooled[0, 1, 0].tolist() == [0, 0, 0]


def test_build_matches_a_direct_computation_and_rewrites_the_catalog(source: Path, tmp_path: Path):
    dst = build_sevirlr(source, tmp_path / "lr", progress=False)
    for name, n in ((FILE_A, 3), (FILE_B, 4)):
        with h5py.File(dst / "data" / name, "r") as f:
            assert f["vil"].dtype == np.uint8 and f["vil"].shape == (n, 2, 2, 25)
            for i in range(n):
                frames = event_frames(i, 6, 6, 49)[:, :, ::2]
                expected = frames.reshape(2, 3, 2, 3, 25).max(axis=(1, 3))
                assert np.array_equal(f["vil"][i], expected)
                assert not np.array_equal(expected, frames.reshape(2, 3, 2, 3, 25).mean(axis=(1, 3)).round())
            with h5py.File(source / "data" / name, "r") as g:
                assert list(f["id"][()]) == list(g["id"][()])
    catalog = pd.read_csv(dst / "CATALOG.csv")
    assert set(catalog["img_type"]) == {"vil"} and len(catalog) == 7
    assert (catalog["size_x"] == 2).all() and (catalog["size_y"] == 2).all()
    offsets = catalog["minute_offsets"].iloc[0].split(":")
    assert len(offsets) == 25 and offsets[:3] == ["-120", "-110", "-100"] and offsets[-1] == "120"
    s5 = catalog[catalog["id"] == "S5"].iloc[0]
    with h5py.File(dst / "data" / FILE_B, "r") as f:
        assert (s5["data_min"], s5["data_max"]) == (f["vil"][2].min(), f["vil"][2].max())
    assert not list(dst.rglob("*.partial*"))

    lr = SevirDataModule(config(dst, name="sevirlr", in_len=7, out_len=6, stride=6, height=2, width=2,
                                frames_per_event=25, frame_minutes=10))
    lr.setup("test")
    sample = lr.datasets["test"][1]
    assert lr.starts == [0, 6, 12] and sample["seq_start"] == 6 and sample["inputs"].shape == (7, 2, 2, 1)
    # pixel (0, 0) of the source holds the frame number; its 3×3 block max is ≥ it, frames are 2 apart
    assert sample["inputs"][0, 0, 0, 0] * 255 >= 12


def test_rerun_skips_finished_files(source: Path, tmp_path: Path):
    dst = build_sevirlr(source, tmp_path / "lr", progress=False)
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (dst / "data").rglob("*.h5")}
    (dst / "data" / FILE_A).unlink()
    build_sevirlr(source, dst, progress=False)
    for path, stamp in stamps.items():
        now = (path.stat().st_ino, path.stat().st_mtime_ns)
        assert (now == stamp) == (not path.name.endswith(Path(FILE_A).name)), path
    assert (dst / "data" / FILE_A).is_file()


def test_interrupted_build_leaves_no_finished_looking_file(source: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sevirlr, "CHUNK_EVENTS", 2)
    calls = {"n": 0}
    real = sevirlr.downsample_events

    def crash_on_second_chunk_of_file_b(vil):
        calls["n"] += 1
        if calls["n"] == 4:  # file A takes chunks 1–2, file B chunks 3–4
            raise KeyboardInterrupt
        return real(vil)

    monkeypatch.setattr(sevirlr, "downsample_events", crash_on_second_chunk_of_file_b)
    dst = tmp_path / "lr"
    with pytest.raises(KeyboardInterrupt):
        build_sevirlr(source, dst, progress=False)
    assert (dst / "data" / FILE_A).is_file() and not (dst / "data" / FILE_B).exists()
    assert not list(dst.rglob("*.partial*")) and not (dst / "CATALOG.csv").exists()

    monkeypatch.setattr(sevirlr, "downsample_events", real)
    a_stamp = (dst / "data" / FILE_A).stat().st_mtime_ns
    build_sevirlr(source, dst, progress=False)
    assert (dst / "data" / FILE_A).stat().st_mtime_ns == a_stamp  # resumed, not redone
    with h5py.File(dst / "data" / FILE_B, "r") as f:
        assert np.array_equal(f["vil"][3], event_frames(3, 6, 6, 49)[:, :, ::2].reshape(2, 3, 2, 3, 25).max((1, 3)))
    assert (dst / "CATALOG.csv").is_file()


def test_builder_errors(source: Path, tmp_path: Path):
    with pytest.raises(UserError, match="source root"):
        build_sevirlr(source, source, progress=False)
    (source / "data" / FILE_B).unlink()
    with pytest.raises(UserError, match="is missing") as excinfo:
        build_sevirlr(source, tmp_path / "lr", progress=False)
    assert "\n" not in str(excinfo.value)
    odd = write_root(tmp_path / "odd", standard_rows(), height=7, width=7)
    with pytest.raises(UserError, match="not divisible by 3"):
        build_sevirlr(odd, tmp_path / "lr_odd", progress=False)
