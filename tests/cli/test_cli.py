"""Each subcommand end to end on a tiny synthetic twin, through the real command line."""

from __future__ import annotations

import csv
import json

import torch
import xarray as xr

from tests.cli.conftest import TINY_DATA, TINY_TRAIN, earthcast


def test_top_level_help_lists_subcommands(workdir):
    out = earthcast("--help", cwd=workdir).stdout
    for name in ("train", "eval", "predict", "data", "info"):
        assert f"  {name} " in out


def test_subcommand_help_and_cfg_job(workdir):
    help_text = earthcast("eval", "--help", cwd=workdir).stdout
    assert "model" in help_text and "dataset" in help_text
    job = earthcast("train", "model=persistence", "trainer.max_epochs=3", "--cfg", "job", cwd=workdir).stdout
    assert "name: persistence" in job and "max_epochs: 3" in job


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
    assert not (workdir / "outputs").exists()  # nothing went to a fresh run dir


def test_eval_rebuilds_from_checkpoint(trained_run, workdir, data_root):
    out = workdir / "runs" / "eval"
    earthcast("eval", f"ckpt_path={trained_run}/checkpoints/best.ckpt", f"hydra.run.dir={out}",
              "trainer.limit_test_batches=1", cwd=workdir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 2  # one batch of eval_batch_size 2
    assert (out / "report.md").exists() and (out / "predictions.nc").exists()


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


def test_info_reports_model_facts(workdir):
    out = workdir / "runs" / "info"
    earthcast("info", "model=unet", "model.base_units=4", "dataset.height=32", "dataset.width=32",
              f"hydra.run.dir={out}", cwd=workdir)
    facts = json.loads((out / "info.json").read_text())
    assert facts["input_shape"] == [13, 32, 32, 1] and facts["output_shape"] == [12, 32, 32, 1]
    assert facts["parameters"] > 0 and facts["gflops_forward_per_sample"] > 0


def test_multirun_runs_each_value(workdir, data_root):
    sweep = workdir / "runs" / "sweep"
    earthcast("train", "-m", *TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}", "model.base_units=4,6",
              f"hydra.sweep.dir={sweep}", cwd=workdir)
    for job in ("0", "1"):
        assert (sweep / job / "metrics.json").exists()
    assert "model.base_units=4" in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "model.base_units=6" in (sweep / "1" / ".hydra" / "overrides.yaml").read_text()
