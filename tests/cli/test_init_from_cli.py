"""`earthcast train init_from=<ckpt>`: fine-tuning from another run's weights with a fresh optimizer."""

from __future__ import annotations

import torch

from tests.cli.conftest import TINY_DATA, TINY_TRAIN, earthcast
from tests.cli.test_bad_input import assert_one_line_error


def test_init_from_a_trained_run(workdir, data_root, trained_run, tmp_path):
    source = trained_run / "checkpoints" / "best.ckpt"
    common = [*TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}"]
    tuned = tmp_path / "tuned"
    result = earthcast("train", *common, f"init_from={source}", "trainer.limit_train_batches=1",
                       f"hydra.run.dir={tuned}", cwd=workdir)
    assert f"init_from={source}" in result.stdout and "weights loaded" in result.stdout
    stored = torch.load(tuned / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(o.startswith("init_from") for o in stored["earthcast"]["overrides"])  # not replayed by eval

    # a wider model: strict refuses in one line; init_strict=false loads what fits and lists the rest
    wider = [*common, "model.base_units=8", "trainer.limit_train_batches=1"]
    refused = earthcast("train", *wider, f"init_from={source}", f"hydra.run.dir={tmp_path / 'refused'}",
                        cwd=workdir, check=False)
    assert_one_line_error(refused, "does not fit model=unet", "shape mismatch", "init_strict=false")
    partial = earthcast("train", *wider, f"init_from={source}", "init_strict=false",
                        f"hydra.run.dir={tmp_path / 'partial'}", cwd=workdir)
    assert "left at their initialisation: shape mismatch" in partial.stdout
