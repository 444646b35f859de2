"""model=extrapolation through the real command line: no fit, a test run, and eval without a checkpoint."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import TINY_DATA, earthcast

pytest.importorskip("pysteps", reason="model=extrapolation needs the `baselines` extra")

RUN = ["model=extrapolation", "trainer.limit_test_batches=2", "outputs.plot_samples=0",
       "outputs.max_prediction_samples=2", "callbacks.progress_bar=null"]


def test_train_and_eval_extrapolation_like_persistence(workdir, data_root):
    train_dir, eval_dir = workdir / "runs" / "extrapolation_train", workdir / "runs" / "extrapolation_eval"
    result = earthcast("train", *TINY_DATA, *RUN, f"paths.data_root={data_root}", f"hydra.run.dir={train_dir}",
                       cwd=workdir)
    assert "Pysteps configuration file" not in result.stdout
    assert not (train_dir / "checkpoints").exists()  # nothing to fit
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert metrics["n_samples"] == 4 and "csi_m" in metrics and "persistence/csi_m" in metrics
    earthcast("eval", *TINY_DATA, *RUN, f"paths.data_root={data_root}", f"hydra.run.dir={eval_dir}", cwd=workdir)
    assert json.loads((eval_dir / "metrics.json").read_text())["n_samples"] == 4
