"""`earthcast runs [root]`: past runs read from their run directories (command, overrides, status, headline
scores), resumable and unfinished runs told apart, scores stored under older names read under today's."""

from __future__ import annotations

import json
import shutil

from earthcast.commands.runs import find_runs, prepare
from tests.conftest import assert_one_line_error, earthcast


def test_the_root_is_the_first_word():
    assert prepare(["outputs/train"]) == ["root=outputs/train"] and prepare(["limit=3"]) == ["limit=3"]


def test_runs_are_listed_from_their_directories(trained_run, workdir, tmp_path):
    root = tmp_path / "outputs"
    shutil.copytree(trained_run, root / "done")
    stopped = shutil.copytree(trained_run, root / "stopped")
    (stopped / "metrics.json").unlink()  # killed after a checkpoint: resumable
    old = shutil.copytree(trained_run, root / "old")
    (old / "metrics.json").write_text(json.dumps({"split": "test", "spread_skill": 0.9, "bias_16": 1.2}))
    (root / "broken" / ".hydra").mkdir(parents=True)
    shutil.copy(trained_run / ".hydra" / "hydra.yaml", root / "broken" / ".hydra" / "hydra.yaml")
    runs = {run.path.name: run for run in find_runs(root)}
    assert {name: run.status for name, run in runs.items()} == {
        "done": "complete", "stopped": "resumable", "old": "complete", "broken": "incomplete"}
    assert runs["done"].command == "train" and "model=unet" in runs["done"].overrides
    assert list(runs["done"].scores) == ["csi_m", "csi_219", "csi_m_pool16"]
    # no headline score: its own scores, under today's names
    assert runs["old"].scores == {"frequency_bias_16": 1.2, "spread_skill_ratio": 0.9}
    listing = earthcast("runs", str(root), cwd=workdir, env={"COLUMNS": "200"}).stdout
    assert "resumable" in listing and "csi_m" in listing and "model=unet" in listing
    assert not (workdir / ".hydra").exists()  # listing keeps no run directory


def test_a_missing_root_is_a_one_line_error(workdir, tmp_path):
    assert_one_line_error(earthcast("runs", str(tmp_path / "nowhere"), cwd=workdir, check=False), "nowhere",
                          "not a directory")
