"""Atomic outputs: a file or directory exists under its real name only once complete."""

from __future__ import annotations

import json
import math

import pytest

from earthcast.io import AtomicFile, atomic_directory, write_json


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), AtomicFile(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with AtomicFile(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_json_writes_nan_as_null(tmp_path):
    write_json(tmp_path / "m.json", {"a": math.nan, "b": [1.0, math.inf], "c": {"d": 2}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2}}


def test_directories_appear_whole_or_not_at_all(tmp_path):
    root = tmp_path / "twin"
    with pytest.raises(OSError), atomic_directory(root) as staging:
        (staging / "a").write_text("1")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(root) as staging:
        (staging / "a").write_text("1")
        assert not root.exists()
    assert (root / "a").read_text() == "1" and list(tmp_path.iterdir()) == [root]
    with atomic_directory(root) as staging:  # into an existing root: entry by entry
        (staging / "b").write_text("2")
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]
