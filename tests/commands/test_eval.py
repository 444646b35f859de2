"""`earthcast eval`: a checkpoint rebuilt as trained and scored on a split, in one process or under DDP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from earthcast.metrics.stored import evaluate_stored
from tests.conftest import TINY_DATA, TINY_TRAIN, assert_one_line_error, earthcast


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
    # the bootstrap's weights follow the events, not the ranks: the same protocol and the same intervals
    assert ddp["protocol"] == single["protocol"] and ddp["intervals"]["csi_m"] == single["intervals"]["csi_m"]
    assert ddp["intervals"]["mse"] == pytest.approx(single["intervals"]["mse"], rel=1e-6)
    with xr.open_dataset(runs["single"] / "predictions.nc") as a, xr.open_dataset(runs["ddp"] / "predictions.nc") as b:
        assert a.sizes == b.sizes and list(a.event_id.values) == list(b.event_id.values)
        assert np.allclose(a.prediction.values, b.prediction.values, atol=0.01)
    assert not list(runs["ddp"].glob("predictions.rank*"))
    # the joined file is a stored forecast like any other: it scores the same as the single-process one
    stored = [evaluate_stored(run / "predictions.nc")[0] for run in runs.values()]
    assert stored[0]["n_samples"] == stored[1]["n_samples"] == 4 and stored[0]["csi_m"] == stored[1]["csi_m"]


# -- intervals, protocol, compare= and published= end to end ---------------------------------------------------
def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_train_and_eval_runs_leave_intervals_a_protocol_and_a_card(trained_run, full_eval):
    assert _metrics(full_eval)["bootstrap"]["units"] >= 5
    for run_dir in (trained_run, full_eval):
        metrics = _metrics(run_dir)
        assert metrics["bootstrap"]["replicates"] == 1000 and metrics["bootstrap"]["unit"] == "events (event_id)"
        low, high = metrics["intervals"]["csi_m"]
        if metrics["bootstrap"]["units"] >= 5:
            assert low <= metrics["csi_m"] <= high
        else:  # the train run's test stops after 2 batches: too few events for an interval
            assert low is None and high is None and run_dir == trained_run
        assert metrics["paired"]["persistence"]["csi_m"]["difference"] == pytest.approx(
            metrics["csi_m"] - metrics["persistence/csi_m"])
        assert len(metrics["protocol"]["fingerprint"]) == 16 and metrics["protocol"]["synthetic"] is True
        assert len(metrics["model"]["checkpoint_sha256"]) == 64
        report = (run_dir / "report.md").read_text()
        assert "[the forecast card](card.md)" in report and "Intervals: 95% percentile bootstrap" in report
        assert "## Limitations" in (run_dir / "card.md").read_text() and (run_dir / "replicates.nc").is_file()
        assert "csi_m_ci_low" in (run_dir / "metrics_by_lead.csv").read_text()


def test_a_stored_forecast_scores_under_the_checkpoint_runs_fingerprint(full_eval, workdir):
    """Same samples, same settings: the stored file of a run and the run itself share their protocol."""
    out = workdir / "runs" / "eval_full_stored"
    earthcast("eval", f"predictions={full_eval}/predictions.nc", f"hydra.run.dir={out}", cwd=workdir)
    stored, direct = _metrics(out), _metrics(full_eval)
    assert stored["protocol"] == direct["protocol"]
    assert stored["intervals"]["csi_m"] == pytest.approx(direct["intervals"]["csi_m"])
    assert "Not known here" in (out / "card.md").read_text()  # no recipe for a stored file


def test_compare_pairs_runs_with_one_protocol_and_warns_otherwise(trained_run, full_eval, workdir):
    out = workdir / "runs" / "eval_compare"
    result = earthcast("eval", f"ckpt_path={trained_run}/checkpoints/best.ckpt", "trainer.limit_test_batches=null",
                       f"compare=[{full_eval},{trained_run}]", "published=earthformer_sevir",
                       f"hydra.run.dir={out}", cwd=workdir)
    metrics = _metrics(out)
    same = metrics["paired"][f"compare/unet ({full_eval.name})"]
    assert same["csi_m"] == {"difference": 0.0, "interval": [0.0, 0.0]} and same["mse"]["interval"] == [0.0, 0.0]
    # the train run's test stopped after 2 batches: other samples, so a warning and no paired interval
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "protocol differs from" in line]
    assert len(warnings) == 1 and f"unet ({trained_run.name})" in warnings[0] and "n_samples" in warnings[0]
    assert metrics["paired"][f"compare/unet ({trained_run.name})"]["csi_m"]["interval"] is None
    published = metrics["published"]
    assert published["name"] == "earthformer_sevir" and "Earthformer" in published["citation"]
    assert any(d.startswith("grid: ours [32, 32] vs paper [384, 384]") for d in published["protocol_differences"])
    row = next(r for r in published["rows"] if r["model"] == "earthformer" and r["score"] == "csi_m")
    assert row["published"] == 0.4419 and row["covered"] is (metrics["intervals"]["csi_m"][1] >= 0.4419)
    report, card = (out / "report.md").read_text(), (out / "card.md").read_text()
    assert "## Compared with unet" in report and "## Published: earthformer_sevir" in report
    assert "Not directly comparable with earthformer_sevir" in card


def test_compare_a_stored_forecast_with_itself(full_eval, workdir):
    out = workdir / "runs" / "eval_stored_compare"
    predictions = full_eval / "predictions.nc"
    earthcast("eval", f"predictions={predictions}", f"compare={predictions}", f"hydra.run.dir={out}", cwd=workdir)
    pairs = _metrics(out)["paired"]["compare/unet (predictions)"]  # told apart from ours, the same model
    assert pairs["csi_m"]["interval"] == [0.0, 0.0] and pairs["crps"]["interval"] == [0.0, 0.0]


def test_compare_and_published_mistakes_are_one_line(trained_run, workdir):
    ckpt = f"ckpt_path={trained_run}/checkpoints/best.ckpt"
    assert_one_line_error(earthcast("eval", ckpt, "published=nosuch", cwd=workdir, check=False),
                          "published='nosuch'", "earthformer_sevir")
    assert_one_line_error(earthcast("eval", ckpt, "compare=/no/such/run", cwd=workdir, check=False),
                          "compare=/no/such/run")
