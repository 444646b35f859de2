"""`earthcast train` end to end on tiny synthetic twins: the run directory, resuming, the SEVIR-LR and ENSO
twins, bfloat16 on the CPU, DDP on the CPU, and a missing data root."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import xarray as xr

from earthcast.commands.train import prepare
from tests.conftest import TINY_DATA, TINY_TRAIN, assert_one_line_error, earthcast

TINY_UNET = ["model=unet", "model.base_units=4", "model.depth=2", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
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


def test_train_writes_complete_run_directory(trained_run):
    for path in (".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "metrics.json", "metrics_by_lead.csv", "predictions.nc", "report.md", "logs/csv/metrics.csv"):
        assert (trained_run / path).exists(), path
    assert list((trained_run / "plots").glob("sequence_*.png")) and (trained_run / "plots" / "forecast.gif").exists()
    assert list((trained_run / "logs" / "tensorboard").glob("events.out.tfevents*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_samples"] > 0
    for key in ("csi_m", "mse", "mae", "persistence/csi_m"):
        assert key in metrics
    with xr.open_dataset(trained_run / "predictions.nc") as ds:
        assert ds.attrs["dataset"] == "sevir"
        assert ds["prediction"].dims == ("sample", "lead_time", "y", "x")
        assert ds.sizes["sample"] == 4 and ds.sizes["lead_time"] == 12
        assert float(ds["target"].max()) <= 255.0
    # no temporary leftovers that could pass for outputs
    assert not list(trained_run.rglob("*.tmp"))


def test_checkpoint_stores_overrides_and_loads_weights_only(trained_run):
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert "model.base_units=4" in checkpoint["earthcast"]["overrides"]


def test_resume_from_last_continues_epochs_in_same_run_dir(workdir, data_root):
    run_dir = workdir / "runs" / "resume"
    common = [*TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}"]
    earthcast("train", *common, f"hydra.run.dir={run_dir}", "test_after_fit=false", cwd=workdir)
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # only the checkpoint and the new epoch budget: everything else is replayed from the checkpoint
    earthcast("train", f"ckpt_path={run_dir}/checkpoints/last.ckpt", "trainer.max_epochs=2", cwd=workdir)
    second = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # one more epoch of the same number of optimizer steps, counted on from the checkpoint (not from zero)
    assert first["epoch"] == 0 and second["epoch"] >= 1
    assert second["global_step"] == 2 * first["global_step"]
    with open(run_dir / "logs" / "csv" / "metrics.csv") as handle:
        epochs = {row["epoch"] for row in csv.DictReader(handle) if row.get("epoch")}
    assert {"0", "1"} <= epochs  # the same CSV log continued into the second epoch
    assert not (workdir / "outputs" / "train").exists()  # nothing went to a fresh run dir


def test_a_resumed_run_keeps_its_run_directory(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert prepare(["-m", f"ckpt_path={ckpt}", "seed=1"]) == [
        "-m", f"ckpt_path={ckpt}", f"hydra.run.dir={(tmp_path / 'run').resolve()}", "seed=1"]
    assert prepare([f"ckpt_path={ckpt}", "hydra.run.dir=x"]) == [f"ckpt_path={ckpt}", "hydra.run.dir=x"]
    assert prepare([f"ckpt_path={tmp_path / 'elsewhere.ckpt'}"]) == [f"ckpt_path={tmp_path / 'elsewhere.ckpt'}"]


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
    with xr.open_dataset(run_dir / "predictions.nc") as forecasts:  # °C anomalies: the affine scaling undone
        assert forecasts.prediction.dims[-2:] == ("lat", "lon") and float(forecasts.target.min()) < 0.0


@pytest.mark.parametrize("experiment", [None, "quickstart_earthformer"])
def test_quickstart_earthformer_trains_in_bf16_on_cpu(experiment, workdir, data_root):
    """Forced here: the preset asks for bfloat16 only where the CPU has it natively. Its forecasts are stored
    as float32, and the quickstart prints a progress line per phase."""
    run_dir = workdir / "runs" / f"quickstart_{experiment}"
    schedule = [arg for arg in TINY_TRAIN if not arg.startswith("model")]
    preset = [f"experiment={experiment}"] if experiment else []
    result = earthcast("train", *preset, *TINY_DATA, *schedule, "model.base_units=16", "model.stem_dims=[8,16]",
                       "trainer.precision=bf16-mixed", f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
                       cwd=workdir)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "precision: bf16-mixed\n" in config and "name: earthformer" in config
    assert f"input_skip_leads: {0 if experiment else '${dataset.out_len}'}\n" in config  # every lead
    if experiment is None:  # the quickstart's progress lines (earthcast.lightning.progress), one per phase
        assert "training   epoch 1/1 · step 3/3 ·" in result.stdout
        assert "training   done: 3 steps in" in result.stdout and "testing    done: 4 samples in" in result.stdout
    scores = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= scores["csi_m"] <= 1.0 and scores["mse"] > 0
    with xr.open_dataset(run_dir / "predictions.nc") as forecasts:
        assert forecasts.prediction.dtype == "float32" and forecasts.prediction.shape[1:] == (12, 32, 32)


def test_train_under_ddp_relaunch_on_cpu(workdir, data_root):
    """Lightning's DDP launcher re-executes the command line once per extra device: the children re-enter the
    same command with the same config and write into the parent's run directory."""
    run_dir = workdir / "runs" / "ddp"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
              "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "optim.total_batch_size=8",
              cwd=workdir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # two ranks × 2 test batches × batch 2: the evaluator's states were summed across ranks
    assert metrics["n_samples"] == 8
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    # the re-launched rank wrote no config or run directory of its own
    assert not (workdir / "outputs" / "train").exists()


def test_missing_data_root(workdir, tmp_path):
    result = earthcast("train", "dataset=sevir", f"paths.data_root={tmp_path}/absent", f"hydra.run.dir={tmp_path}/r",
                       cwd=workdir, check=False)
    assert_one_line_error(result, str(tmp_path / "absent"))
