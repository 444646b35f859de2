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
