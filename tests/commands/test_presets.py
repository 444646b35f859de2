"""The presets users expect from lightning-hydra-template: logger=wandb (offline by default, the CSV log kept)
and hparams_search=optuna (an Optuna study over lr and width that reads each trial's best validation score).
Each skips with the reason when its optional package is not installed."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from tests.conftest import TINY_DATA, TINY_TRAIN, assert_one_line_error, compose_config, earthcast

needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="wandb is not installed (pip install 'earthcast[wandb]')")
needs_optuna = pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                                  reason="hydra-optuna-sweeper is not installed (pip install 'earthcast[optuna]')")


@needs_wandb
def test_wandb_logs_offline_into_the_run_directory(workdir, data_root):
    run_dir = workdir / "runs" / "wandb"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, "logger=wandb", "outputs.plot_samples=0",
              f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}", cwd=workdir,
              env={"WANDB_SILENT": "true", "WANDB_MODE": ""})
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert (run_dir / "logs" / "csv" / "metrics.csv").is_file()


def test_wandb_without_its_package_is_a_one_line_error(workdir, data_root, tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed: the missing-package message cannot be shown here")
    result = earthcast("train", *TINY_DATA, *TINY_TRAIN, "logger=wandb", f"paths.data_root={data_root}",
                       f"hydra.run.dir={tmp_path}", cwd=workdir, check=False)
    assert_one_line_error(result, "earthcast[wandb]")


@needs_optuna
def test_the_optuna_search_follows_the_monitor():
    cfg = compose_config(["hparams_search=optuna", "evaluator=gridded", "dataset=gridded_synth"])
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.optimized_metric == "val/mse"
    cfg = compose_config(["hparams_search=optuna"])
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "val/csi_m"
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "model.base_units"}


@needs_optuna
def test_an_optuna_search_runs_its_trials(workdir, data_root):
    sweep = workdir / "runs" / "optuna"
    earthcast("train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
              *TINY_DATA, *[w for w in TINY_TRAIN if not w.startswith("model.base_units")], "outputs.plot_samples=0",
              f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}", cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optim.lr", "model.base_units"}
    assert 0 <= results["best_value"] <= 1  # a CSI-M
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
