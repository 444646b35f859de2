"""`earthcast train init_from=<ckpt>`: fine-tuning from another run's weights with a fresh optimizer."""

from __future__ import annotations

import torch

from tests.conftest import TINY_DATA, assert_one_line_error, earthcast

# the quickstart (its small Earthformer) on the tiny twin, a few steps
TINY_QUICKSTART = [*TINY_DATA, "experiment=quickstart", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.precision=32-true",
                   "outputs.plot_samples=0", "outputs.max_prediction_samples=2", "callbacks.progress_bar=null"]


def test_init_from_a_quickstart_run(workdir, data_root, tmp_path):
    common = [*TINY_QUICKSTART, f"paths.data_root={data_root}"]
    source_run = tmp_path / "source"
    earthcast("train", *common, f"hydra.run.dir={source_run}", cwd=workdir)
    source = source_run / "checkpoints" / "last.ckpt"

    tuned = tmp_path / "tuned"
    result = earthcast("train", *common, f"init_from={source}", f"hydra.run.dir={tuned}", cwd=workdir)
    assert f"init_from={source}" in result.stdout and "weights loaded" in result.stdout
    stored = torch.load(tuned / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(o.startswith("init_from") for o in stored["earthcast"]["overrides"])  # not replayed by eval

    # a wider model: strict refuses in one line; init_strict=false loads what fits and lists the rest
    wider = [*common, "model.base_units=16", "model.stem_dims=[8,16]"]
    refused = earthcast("train", *wider, f"init_from={source}", f"hydra.run.dir={tmp_path / 'refused'}",
                        cwd=workdir, check=False)
    assert_one_line_error(refused, "does not fit model=earthformer", "shape mismatch", "init_strict=false")
    assert not (tmp_path / "refused" / "checkpoints").exists()
    partial = earthcast("train", *wider, f"init_from={source}", "init_strict=false",
                        f"hydra.run.dir={tmp_path / 'partial'}", cwd=workdir)
    assert "left at their initialisation: shape mismatch" in partial.stdout
