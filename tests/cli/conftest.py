"""A tiny synthetic SEVIR twin and helpers to run the real `earthcast` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from earthcast.cli import config_dir

# Tiny everything: 32×32 frames, a handful of events, one short epoch.
TINY_DATA = ["dataset=sevir_synth", "dataset.synth.n_events=24", "dataset.synth.img_size=32",
             "dataset.batch_size=2", "dataset.eval_batch_size=2",
             "dataset.num_workers=0"]
TINY_TRAIN = ["model=unet", "model.base_units=4", "model.depth=2", "trainer.max_epochs=1",
              "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
              "outputs.plot_samples=1", "outputs.max_prediction_samples=4", "callbacks.progress_bar=null"]


def compose_config(overrides, name: str = "train"):
    """The config `earthcast <name> <overrides>` would run with (hydra node included), without running it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=True)


def earthcast(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"PYTHONWARNINGS": "ignore", **(env or {})})
    result = subprocess.run([sys.executable, "-m", "earthcast", *args], cwd=cwd, env=full_env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"earthcast {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("earthcast")


@pytest.fixture(scope="session")
def data_root(workdir) -> Path:
    root = workdir / "data"
    earthcast("data", "synth", *TINY_DATA, f"paths.data_root={root}", cwd=workdir)
    return root


@pytest.fixture(scope="session")
def trained_run(workdir, data_root) -> Path:
    run_dir = workdir / "runs" / "train"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
              cwd=workdir)
    return run_dir
