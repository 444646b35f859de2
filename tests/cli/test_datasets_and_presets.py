"""`earthcast train` end to end on the SEVIR-LR and ENSO twins, and every shipped preset composing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from earthcast.cli import config_dir
from tests.cli.conftest import compose_config, earthcast

TINY_UNET = ["model=unet", "model.base_units=4", "model.depth=2", "trainer.max_epochs=1",
             "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
             "outputs.plot_samples=1", "outputs.max_prediction_samples=2", "callbacks.progress_bar=null",
             "dataset.batch_size=2", "dataset.eval_batch_size=2"]
TINY_ENSO = ["dataset=enso_synth", "evaluator=enso", "dataset.synth.n_cmip6_models=1",
             "dataset.synth.cmip6_records=6", "dataset.synth.n_cmip5_models=3", "dataset.synth.cmip5_records=6",
             "dataset.synth.soda_records=0", "dataset.splits.train.cmip6=[1,1]", "dataset.splits.train.cmip5=[1,1]",
             "dataset.splits.val.cmip5=[2,2]", "dataset.splits.test.cmip5=[3,3]"]


def _metrics(run_dir: Path) -> dict:
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "predictions.nc").is_file()
    return json.loads((run_dir / "metrics.json").read_text())


def test_train_on_the_sevirlr_twin(tmp_path):
    run_dir = tmp_path / "run"
    earthcast("train", "dataset=sevirlr_synth", "evaluator=sevirlr", "dataset.synth.n_events=12",
              "dataset.synth.img_size=32", *TINY_UNET, f"paths.data_root={tmp_path / 'data'}",
              f"hydra.run.dir={run_dir}", cwd=tmp_path)
    metrics = _metrics(run_dir)
    assert metrics["n_samples"] > 0 and 0.0 <= metrics["mse"] < 1.0
    assert "csi_m" in metrics and "csi_m_pool4" in metrics


def test_train_on_the_enso_twin(tmp_path):
    run_dir = tmp_path / "run"
    earthcast("train", *TINY_ENSO, *TINY_UNET, f"paths.data_root={tmp_path / 'data'}",
              f"hydra.run.dir={run_dir}", cwd=tmp_path)
    metrics = _metrics(run_dir)
    assert metrics["n_samples"] > 0 and "nino34_corr_m" in metrics and "nino34_rmse" in metrics
    assert math.isfinite(metrics["mse"])
    assert (tmp_path / "data" / "enso_synth" / "CMIP_train.nc").is_file()


def test_slurm_preset_runs_one_task_per_gpu():
    cfg = compose_config(["hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.gpus_per_node=2",
                    "trainer.devices=2", "trainer.num_nodes=3"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 2
    assert launcher.nodes == 3


EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.model.name and cfg.dataset.name and cfg.optim.lr > 0
