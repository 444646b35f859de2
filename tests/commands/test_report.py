"""`earthcast report`: many runs in one table and plot, sorted, with intervals and the protocol check."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import yaml

from earthcast.commands.report import prepare
from tests.conftest import TINY_DATA, assert_one_line_error, earthcast


def test_positional_run_directories_become_the_runs_list():
    assert prepare(["a/b", "c d", "sort_by=mse"]) == ["runs=['a/b','c d']", "sort_by=mse"]
    assert prepare(["runs=[x]"]) == ["runs=[x]"]


def test_report_sorts_runs_pairs_within_a_protocol_and_warns_across(trained_run, full_eval, workdir, data_root):
    persistence = workdir / "runs" / "eval_persistence"
    earthcast("eval", "model=persistence", *TINY_DATA, f"paths.data_root={data_root}", f"hydra.run.dir={persistence}",
              cwd=workdir)
    out = workdir / "runs" / "report"
    result = earthcast("report", str(full_eval), str(persistence), str(trained_run), "sort_by=mse",
                       f"hydra.run.dir={out}", cwd=workdir)
    runs = pd.read_csv(out / "runs.csv")
    assert runs["mse"].is_monotonic_increasing  # lower is better: best first
    assert runs["rank"].tolist() == [1, 2, 3] and set(runs["path"]) == {str(full_eval), str(persistence), str(trained_run)}
    protocols = dict(zip(runs["path"], runs["protocol"]))
    assert protocols[str(full_eval)] == protocols[str(persistence)] != protocols[str(trained_run)]
    # paired Δ vs the best run inside its protocol; none across
    best = runs.iloc[0]
    for _, row in runs.iloc[1:].iterrows():
        same = row["protocol"] == best["protocol"]
        assert pd.notna(row["mse_minus_best_ci_low"]) == same
        if same:
            assert row["mse_minus_best_ci_low"] <= row["mse_minus_best"] <= row["mse_minus_best_ci_high"]
    assert sum("protocols among 3 runs" in line for line in (result.stdout + result.stderr).splitlines()) == 1
    report = (out / "report.md").read_text()
    assert "**Warning**: the runs were not all scored the same way" in report and (out / "plots" / "runs.png").is_file()
    interval = json.loads((full_eval / "metrics.json").read_text())["intervals"]["csi_m"]
    assert f"[{interval[0]:.4g}, {interval[1]:.4g}]" in report


def test_report_finds_the_runs_of_a_sweep_and_labels_them_by_their_overrides(full_eval, workdir):
    sweep = workdir / "runs" / "fake_sweep"
    (sweep / "multirun.yaml").parent.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for job, value in (("0", 4), ("1", 6)):
        shutil.copytree(full_eval, sweep / job, dirs_exist_ok=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"model.base_units={value}", f"hydra.run.dir=/x/{job}"]))
    out = workdir / "runs" / "report_sweep"
    earthcast("report", str(sweep), f"hydra.run.dir={out}", cwd=workdir)
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["run"]) == ["model.base_units=4", "model.base_units=6"]
    assert runs["protocol"].nunique() == 1 and "All runs share one protocol" in (out / "report.md").read_text()
    assert runs.loc[1, "csi_m_minus_best"] == 0 and runs.loc[1, "csi_m_minus_best_ci_high"] == 0


def test_report_mistakes_are_one_line(workdir):
    assert_one_line_error(earthcast("report", cwd=workdir, check=False), "needs run directories")
    assert_one_line_error(earthcast("report", str(workdir / "nowhere"), cwd=workdir, check=False), "not a directory")
    empty = workdir / "runs" / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    assert_one_line_error(earthcast("report", str(empty), cwd=workdir, check=False), "holds no run")
