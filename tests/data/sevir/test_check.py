"""`check_sevir_root` on hand-written roots: a clean report, and problems listed instead of raised."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from earthcast.data.sevir.check import check_sevir_root
from tests.data.sevir.conftest import FILE_A, FILE_B, config, row, standard_rows, write_root


def test_clean_root_reports_events_and_sequences_per_split(tmp_path: Path):
    rows = standard_rows() + [row("D", "2018-04-01 00:00:00", FILE_A, 3), row("D", "2018-04-01 00:00:00", FILE_A, 4)]
    report = check_sevir_root(config(write_root(tmp_path / "r", rows)), progress=False)
    assert report["ok"] and report["problems"] == []
    assert {s: (f["events"], f["sequences"]) for s, f in report["splits"].items()} == {
        "train": (2, 6), "val": (2, 6), "test": (2, 6)}
    assert report["splits"]["val"]["first"] == "2019-02-01T00:10:00"
    assert report["splits"]["val"]["event_types"] == {"Flash Flood": 1, "(random)": 1}
    assert report["catalog"]["dropped_duplicate_rows"] == 2 and report["catalog"]["dropped_missing_data"] == 1
    assert set(report["files"]) == {FILE_A, FILE_B}
    assert any("appears more than once" in note for note in report["notes"])


def test_problems_are_collected_not_raised(tmp_path: Path):
    root = write_root(tmp_path / "r", standard_rows())
    (root / "data" / FILE_A).unlink()
    with h5py.File(root / "data" / FILE_B, "r+") as f:
        del f["id"]
        f["id"] = np.array([b"S3", b"WRONG", b"S5", b"S6"])
    cfg = config(root, splits={"train": [None, "2019-01-01"], "val": ["2019-01-01", "2019-06-01"],
                               "test": ["2030-01-01", None]})
    report = check_sevir_root(cfg, progress=False)
    assert not report["ok"]
    problems = " | ".join(report["problems"])
    assert FILE_A in problems and "is missing" in problems
    assert "1 catalog ids differ" in problems
    assert "dataset.splits.test" in problems
    assert report["splits"]["train"]["events_in_bad_files"] == 2
    assert all("\n" not in p for p in report["problems"])


def test_missing_root_is_a_problem_not_an_exception(tmp_path: Path):
    report = check_sevir_root(config(tmp_path / "absent"), progress=False)
    assert not report["ok"] and "does not exist" in report["problems"][0]
