"""A run stopped by a signal says so and loses no work: `train` saves last.ckpt at a step boundary and exits
128 + the signal number with one line; its resume — with ckpt_path=, after a SLURM requeue, or after kill -9
by running the same command again — ends with the metrics and the log rows of an uninterrupted run of the same
seed. `eval` and `predict` stop without leaving anything that looks complete.

The signals are real: the process sends one to itself at a chosen step (tests.signal_callback.SendSignal)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import TINY_DATA, earthcast

REPO = Path(__file__).resolve().parents[2]
SIGNAL_ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
# 2 epochs of 3 steps; every step logged and flushed, so a killed run leaves rows past its checkpoint
SHORT = [*TINY_DATA, "model=unet", "model.base_units=4", "model.depth=2", "trainer.max_epochs=2",
         "trainer.limit_train_batches=3", "trainer.check_val_every_n_epoch=1", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1",
         "outputs.plot_samples=0", "outputs.max_prediction_samples=2", "callbacks.progress_bar=null",
         "trainer.log_every_n_steps=1", "+logger.csv.flush_logs_every_n_steps=1"]
STEPS = 6


def send(name: str, **at) -> list[str]:
    return ["+callbacks.signal._target_=tests.signal_callback.SendSignal", f"+callbacks.signal.name={name}",
            *(f"+callbacks.signal.{key}={value}" for key, value in at.items())]


def assert_stopped(result, code: int, *fragments: str) -> str:
    """Exit code 128 + signal, one line on stderr (no traceback), naming what was saved and how to go on."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def logged_rows(run_dir: Path) -> pd.DataFrame:
    """The CSV log as rows, column order aside (a resumed run may have rewritten the header)."""
    rows = pd.read_csv(run_dir / "logs" / "csv" / "metrics.csv")
    return rows[sorted(rows.columns)].sort_values(["step", "epoch"], na_position="first").reset_index(drop=True)


def outcome(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """The scores and the log; the scored checkpoint's path and hash name the run directory, so they are left out."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("checkpoint", "checkpoint_sha256"):
        metrics["model"].pop(key, None)
    return metrics, logged_rows(run_dir)


def assert_same_run(run_dir: Path, reference: tuple[dict, pd.DataFrame]) -> None:
    metrics, rows = outcome(run_dir)
    assert metrics == reference[0]
    pd.testing.assert_frame_equal(rows, reference[1])
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS


@pytest.fixture(scope="module")
def uninterrupted(workdir, data_root) -> tuple[dict, pd.DataFrame]:
    run_dir = workdir / "runs" / "uninterrupted"
    earthcast("train", *SHORT, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}", cwd=workdir,
              env=SIGNAL_ENV)
    return outcome(run_dir)


@pytest.mark.parametrize("at,saved_step,where", [({"step": 4}, 5, "at step 5 (epoch 1)"),
                                                 ({"val_batch": 0}, 3, "at step 3, after epoch 0")],
                         ids=["mid-epoch", "validation"])
def test_sigterm_saves_last_ckpt_and_the_resume_matches(workdir, data_root, uninterrupted, tmp_path, at, saved_step,
                                                        where):
    """Mid-epoch: the step the signal arrived in finishes, then last.ckpt. During validation: the validation and
    its epoch finish (ModelCheckpoint saves best.ckpt and last.ckpt), then the run stops."""
    run_dir = tmp_path / "run"
    stopped = earthcast("train", *SHORT, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
                        *send("TERM", **at), cwd=tmp_path, check=False, env=SIGNAL_ENV)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert_stopped(stopped, 143, f"stopped by SIGTERM {where}",
                   f"saved {last}", f"resume with: earthcast train ckpt_path={last}")
    assert torch.load(last, weights_only=True)["global_step"] == saved_step
    assert not (run_dir / "metrics.json").exists() and not list(run_dir.rglob("*.tmp"))
    earthcast("train", f"ckpt_path={last}", cwd=tmp_path, env=SIGNAL_ENV)
    assert_same_run(run_dir, uninterrupted)


def test_kill_9_then_the_same_command_resumes_and_matches(workdir, data_root, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    command = ["train", *SHORT, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}", *send("KILL", step=4)]
    killed = earthcast(*command, cwd=tmp_path, check=False, env=SIGNAL_ENV)
    assert killed.returncode == -9
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3  # epoch 0
    assert (logged_rows(run_dir)["step"] > 3).any()  # rows the killed run wrote after its checkpoint
    resumed = earthcast(*command, cwd=tmp_path, env=SIGNAL_ENV)  # no flag: the run directory's own last.ckpt
    assert "taking over the stale lock" in resumed.stderr and "resuming from" in resumed.stdout
    assert_same_run(run_dir, uninterrupted)  # no row twice, the same data order and RNG draws


def test_the_warning_signal_under_slurm_requeues_and_the_requeued_job_resumes(workdir, data_root, uninterrupted,
                                                                               tmp_path):
    """USR1 inside a SLURM batch job: save, `scontrol requeue <job>` (a fake scontrol records it), exit 138; the
    requeued job runs the same command, finds its run directory (outputs/train/slurm-<job>) and resumes."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    (fake_bin / "scontrol").chmod(0o755)
    slurm = {**SIGNAL_ENV, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
             "SLURM_JOB_NAME": "train"}
    command = ["train", *SHORT, f"paths.data_root={data_root}", *send("USR1", step=4)]
    run_dir = tmp_path / "outputs" / "train" / "slurm-4242"
    stopped = earthcast(*command, cwd=tmp_path, check=False, env=slurm)
    assert_stopped(stopped, 138, "SIGUSR1 at step 5", "requeued SLURM job 4242", f"resumes from there in {run_dir}")
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    requeued = earthcast(*command, cwd=tmp_path, env={**slurm, "SLURM_RESTART_COUNT": "1"})
    assert f"resuming from {run_dir}/checkpoints/last.ckpt" in requeued.stdout
    assert_same_run(run_dir, uninterrupted)


def test_sigint_during_training_exits_130_after_saving(workdir, data_root, tmp_path):
    run_dir = tmp_path / "run"
    stopped = earthcast("train", *SHORT, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
                        *send("INT", step=1), cwd=tmp_path, check=False, env=SIGNAL_ENV)
    assert_stopped(stopped, 130, "stopped by SIGINT at step 2 (epoch 0)", "resume with")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.parametrize("command,name,code", [("eval", "TERM", 143), ("predict", "INT", 130)])
def test_eval_and_predict_stop_without_leaving_outputs(trained_run, tmp_path, command, name, code):
    run_dir = tmp_path / "run"
    stopped = earthcast(command, f"ckpt_path={trained_run}/checkpoints/best.ckpt", f"hydra.run.dir={run_dir}",
                        *send(name, test_batch=1), cwd=tmp_path, check=False, env=SIGNAL_ENV)
    assert_stopped(stopped, code, f"stopped by SIG{name}", "nothing partial")
    leftovers = [p.name for p in run_dir.iterdir() if p.name not in (".hydra", ".earthcast.lock", "cli.log",
                                                                     f"{command}.log", f".signal-sent-SIG{name}")]
    assert leftovers == [], leftovers  # no predictions.nc, metrics.json, report.md or temporary file


@pytest.mark.slow
def test_a_requeued_submitit_job_resumes_in_its_sweep_directory(workdir, data_root, uninterrupted, tmp_path):
    """hydra/launcher=submitit_local runs the sweep job as submitit does on SLURM; running its pickled submission
    again (what a requeue does) lands in the same job directory, which the first run's ${now:} made."""
    import glob
    import sys

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "scontrol").chmod(0o755)
    slurm = {**SIGNAL_ENV, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "t"}
    first = earthcast("train", "-m", "hydra/launcher=submitit_local", *SHORT, f"paths.data_root={data_root}",
                      *send("USR1", step=4), cwd=tmp_path, check=False, env=slurm)
    assert "requeued SLURM job 77" in first.stderr
    [job_dir] = [Path(p) for p in glob.glob(str(tmp_path / "outputs/train/multirun/*/*/0"))]
    [submission] = [Path(p).parent for p in glob.glob(str(job_dir.parent / ".submitit/*/*_submitted.pkl"))]
    local = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": submission.name, "SUBMITIT_LOCAL_NTASKS": "1",
             "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "0",
             "SUBMITIT_LOCAL_LOCALID": "0"}
    import subprocess

    again = subprocess.run([sys.executable, "-m", "submitit.core._submit", str(submission.parent / "%j")],
                           cwd=tmp_path, env={**os.environ, **slurm, **local, "SLURM_RESTART_COUNT": "1"},
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {job_dir}/checkpoints/last.ckpt" in again.stdout
    assert_same_run(job_dir, uninterrupted)
