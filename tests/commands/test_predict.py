"""`earthcast predict`, and scoring what it wrote with `earthcast eval predictions=`."""

from __future__ import annotations

import json

import xarray as xr

from tests.conftest import earthcast


def test_predict_then_eval_stored_file(trained_run, workdir):
    out = workdir / "runs" / "predict"
    earthcast("predict", f"ckpt_path={trained_run}/checkpoints/best.ckpt", f"hydra.run.dir={out}",
              "trainer.limit_predict_batches=2", cwd=workdir)
    with xr.open_dataset(out / "predictions.nc") as ds:
        assert ds.sizes["sample"] == 4
        assert "context" in ds and "event_type" in ds
    scored = workdir / "runs" / "eval_stored"
    earthcast("eval", f"predictions={out}/predictions.nc", f"hydra.run.dir={scored}", cwd=workdir)
    metrics = json.loads((scored / "metrics.json").read_text())
    assert metrics["n_samples"] == 4 and "csi_m" in metrics
