"""Lightning's DDP launcher re-executes the command line once per extra device: the children must re-enter
the same subcommand with the same config and write into the parent's run directory."""

from __future__ import annotations

import json

from tests.cli.conftest import TINY_DATA, TINY_TRAIN, earthcast


def test_train_under_ddp_relaunch_on_cpu(workdir, data_root):
    run_dir = workdir / "runs" / "ddp"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
              "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "optim.total_batch_size=8",
              cwd=workdir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # two ranks × 2 test batches × batch 2: the evaluator's states were summed across ranks
    assert metrics["n_samples"] == 8
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    # the re-launched rank wrote no config or run directory of its own
    assert not (workdir / "outputs").exists()


def test_eval_under_ddp_scores_every_sample_once_and_stores_them_in_order(workdir, data_root):
    """Two ranks score the same samples as one process: Lightning's default sampler would pad the ranks' shares
    with repeated samples (counted twice in the synced metrics), and only rank 0's share reached predictions.nc."""
    import numpy as np
    import xarray as xr

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
    from earthcast.metrics.stored import evaluate_stored

    stored = [evaluate_stored(run / "predictions.nc")[0] for run in runs.values()]
    assert stored[0]["n_samples"] == stored[1]["n_samples"] == 4 and stored[0]["csi_m"] == stored[1]["csi_m"]
