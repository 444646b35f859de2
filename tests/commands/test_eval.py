"""`earthcast eval`: a checkpoint rebuilt as trained and scored on a split, in one process or under DDP."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from earthcast.metrics.stored import evaluate_stored
from tests.conftest import TINY_DATA, TINY_TRAIN, earthcast


def test_eval_rebuilds_from_checkpoint(trained_run, workdir, data_root):
    out = workdir / "runs" / "eval"
    earthcast("eval", f"ckpt_path={trained_run}/checkpoints/best.ckpt", f"hydra.run.dir={out}",
              "trainer.limit_test_batches=1", cwd=workdir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 2  # one batch of eval_batch_size 2
    assert (out / "report.md").exists() and (out / "predictions.nc").exists()


def test_eval_another_split(trained_run, workdir):
    out = workdir / "runs" / "eval_val"
    earthcast("eval", f"ckpt_path={trained_run}/checkpoints/best.ckpt", "split=val", "trainer.limit_test_batches=1",
              f"hydra.run.dir={out}", cwd=workdir)
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"


def test_eval_under_ddp_scores_every_sample_once_and_stores_them_in_order(workdir, data_root):
    """Two ranks score the same samples as one process: Lightning's default sampler would pad the ranks' shares
    with repeated samples (counted twice in the synced metrics), and only rank 0's share reached predictions.nc."""
    # trained under DDP too: the test after fit goes through the datamodule's loaders, built by Lightning
    train_dir = workdir / "runs" / "ddp_eval_ckpt"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, "trainer.limit_test_batches=null", "trainer.accelerator=cpu",
              "trainer.devices=2", "trainer.strategy=ddp", f"paths.data_root={data_root}",
              f"hydra.run.dir={train_dir}", cwd=workdir)
    ckpt = f"ckpt_path={train_dir}/checkpoints/best.ckpt"
    runs = {name: workdir / "runs" / f"ddp_eval_{name}" for name in ("single", "ddp")}
    earthcast("eval", ckpt, "trainer.limit_test_batches=null", f"hydra.run.dir={runs['single']}", cwd=workdir)
    earthcast("eval", ckpt, "trainer.limit_test_batches=null", "trainer.accelerator=cpu", "trainer.devices=2",
              "trainer.strategy=ddp", f"hydra.run.dir={runs['ddp']}", cwd=workdir)
    single, ddp = (json.loads((run / "metrics.json").read_text()) for run in runs.values())
    assert single["n_samples"] % 2 == 1  # an odd count: the default sampler would have repeated one
    assert ddp["n_samples"] == single["n_samples"]
    after_fit = json.loads((train_dir / "metrics.json").read_text())
    assert after_fit["n_samples"] == single["n_samples"] and abs(after_fit["mse"] - single["mse"]) < 1e-6 * single["mse"]
    assert abs(ddp["mse"] - single["mse"]) < 1e-6 * single["mse"] and ddp["csi_m"] == single["csi_m"]
    with xr.open_dataset(runs["single"] / "predictions.nc") as a, xr.open_dataset(runs["ddp"] / "predictions.nc") as b:
        assert a.sizes == b.sizes and list(a.event_id.values) == list(b.event_id.values)
        assert np.allclose(a.prediction.values, b.prediction.values, atol=0.01)
    assert not list(runs["ddp"].glob("predictions.rank*"))
    # the joined file is a stored forecast like any other: it scores the same as the single-process one
    stored = [evaluate_stored(run / "predictions.nc")[0] for run in runs.values()]
    assert stored[0]["n_samples"] == stored[1]["n_samples"] == 4 and stored[0]["csi_m"] == stored[1]["csi_m"]
