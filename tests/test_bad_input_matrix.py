"""Bad input, command by command: every case exits with code 2 and one stderr line that names the key, file or
value (the fragments below), without a traceback, and leaves no output that looks complete (no metrics.json,
predictions.nc, report.md or checkpoint appears, no temporary file is left).

The cases run through earthcast's real main() in this process (tests.conftest.earthcast_in_process), so the
matrix costs seconds, not a new interpreter per case. `{tmp}` is the case's own directory (also its working
directory), `{data}` the session's tiny synthetic twin, `{ckpt}` a checkpoint of the session's tiny training
run, `{file}` a regular file; a case's `setup` prepares what it needs under {tmp}.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from tests.conftest import TINY_DATA, TINY_TRAIN, assert_one_line_error, earthcast_in_process

TRAIN = ("train", *TINY_DATA, *TINY_TRAIN, "paths.data_root={data}", "hydra.run.dir={tmp}/run")
COMPLETE_LOOKING = ("metrics.json", "predictions.nc", "report.md", "*.ckpt", "*.tmp", ".*.tmp*")


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    setup: Callable[[Path, dict], None] | None = None
    env: tuple[tuple[str, str], ...] = ()
    skip: str = ""  # why the case cannot run here ("" = it can)


def _regular_file(tmp: Path, ctx: dict) -> None:
    ctx["file"].write_text("not a directory\n")


def _read_only_parent(tmp: Path, ctx: dict) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


def _lock_held(tmp: Path, ctx: dict) -> None:
    """Another process's lock: flocked through a file descriptor of its own, with its holder record."""
    (tmp / "run").mkdir()
    fd = os.open(tmp / "run" / ".earthcast.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": 4242, "host": "node7", "command": "earthcast train",
                             "since": "2026-01-01 00:00:00"}).encode())
    ctx["keep_open"].append(fd)


def _another_run(tmp: Path, ctx: dict) -> None:
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(ctx["ckpt"].parent / "last.ckpt", tmp / "run" / "checkpoints" / "last.ckpt")


def _corrupt_catalog(tmp: Path, ctx: dict) -> None:
    (tmp / "sevir").mkdir()
    (tmp / "sevir" / "CATALOG.csv").write_bytes(b"\x00\x01garbage,\n\xff\xfe")


def _twin_without_catalog(tmp: Path, ctx: dict) -> None:
    shutil.copytree(ctx["data"] / "sevir_synth", tmp / "data" / "sevir_synth")
    (tmp / "data" / "sevir_synth" / "CATALOG.csv").unlink()


def _test_file_missing(tmp: Path, ctx: dict) -> None:
    """A copy of the twin without the file that holds only test-split events (after 2019-06-01)."""
    shutil.copytree(ctx["data"] / "sevir_synth", tmp / "data" / "sevir_synth")
    (tmp / "data" / "sevir_synth" / "data" / "vil" / "2019" / "SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5").unlink()


def _replayed_unknown_key(tmp: Path, ctx: dict) -> None:
    content = torch.load(ctx["ckpt"], weights_only=True)
    content["earthcast"]["overrides"].append("model.retired_option=3")
    torch.save(content, tmp / "old.ckpt")


def _stored(tmp: Path, ctx: dict, scale: float, offset: float) -> None:
    rng = np.random.default_rng(0)
    target = (rng.random((3, 2, 8, 8)) ** 2 * scale + offset).astype(np.float32)
    xr.Dataset({"prediction": (("sample", "lead_time", "y", "x"), target * 0.9),
                "target": (("sample", "lead_time", "y", "x"), target)},
               attrs={"dataset": "sevir"}).to_netcdf(tmp / "forecast.nc")


def _celsius_anomalies(tmp: Path, ctx: dict) -> None:
    _stored(tmp, ctx, scale=4.0, offset=-2.0)


def _vil_over_255(tmp: Path, ctx: dict) -> None:
    _stored(tmp, ctx, scale=1.0, offset=0.0)


ROOT_IGNORES_PERMISSIONS = "running as root: file permissions do not apply" if os.geteuid() == 0 else ""
NO_GPU_ONLY = "a CUDA GPU is present" if torch.cuda.is_available() else ""

CASES = [
    # -- values, checked when the config is composed (earthcast.validation)
    Case("max_epochs-string", (*TRAIN, "trainer.max_epochs=three"), ("trainer.max_epochs='three'", "integer")),
    Case("max_epochs-zero", (*TRAIN, "trainer.max_epochs=0"), ("trainer.max_epochs=0", "≥ 1", "earthcast eval")),
    Case("max_epochs-negative", (*TRAIN, "trainer.max_epochs=-3"), ("trainer.max_epochs=-3", "≥ 1")),
    Case("min-above-max-epochs", (*TRAIN, "trainer.min_epochs=5"), ("trainer.min_epochs=5", "max_epochs=1")),
    Case("batch_size-negative", (*TRAIN, "dataset.batch_size=-4"), ("dataset.batch_size=-4", "≥ 1")),
    Case("batch_size-zero", (*TRAIN, "dataset.batch_size=0"), ("dataset.batch_size=0",)),
    Case("eval_batch_size-float", (*TRAIN, "dataset.eval_batch_size=2.5"), ("dataset.eval_batch_size=2.5",)),
    Case("num_workers-negative", (*TRAIN, "dataset.num_workers=-1"), ("dataset.num_workers=-1", "≥ 0")),
    Case("lr-negative", (*TRAIN, "optim.lr=-1"), ("optim.lr=-1", "> 0")),
    Case("lr-zero", (*TRAIN, "optim.lr=0"), ("optim.lr=0", "> 0")),
    Case("lr-string", (*TRAIN, "optim.lr=fast"), ("optim.lr='fast'", "number")),
    Case("weight_decay-negative", (*TRAIN, "optim.weight_decay=-0.1"), ("optim.weight_decay=-0.1",)),
    Case("warmup-above-one", (*TRAIN, "optim.warmup_fraction=2"), ("optim.warmup_fraction=2", "≤ 1")),
    Case("clip-negative", (*TRAIN, "optim.gradient_clip_val=-1"), ("optim.gradient_clip_val=-1",)),
    Case("precision-unknown", (*TRAIN, "trainer.precision=17-banana"), ("trainer.precision='17-banana'", "bf16-mixed")),
    Case("gpu-on-cpu-machine", (*TRAIN, "trainer=gpu"), ("trainer.accelerator=gpu", "no CUDA GPU", "trainer=cpu"),
         skip=NO_GPU_ONLY),
    Case("accelerator-unknown", (*TRAIN, "trainer.accelerator=tpu"), ("trainer.accelerator='tpu'",)),
    Case("devices-zero", (*TRAIN, "trainer.devices=0"), ("trainer.devices=0",)),
    Case("limit-train-zero", (*TRAIN, "trainer.limit_train_batches=0"), ("trainer.limit_train_batches=0", "> 0")),
    Case("limit-val-fraction", (*TRAIN, "trainer.limit_val_batches=1.5"), ("trainer.limit_val_batches=1.5",
                                                                           "fraction")),
    Case("seed-string", (*TRAIN, "seed=abc"), ("seed='abc'", "integer")),
    Case("model-width-zero", (*TRAIN, "model.base_units=0"), ("model.base_units=0",)),
    Case("model-dropout-above-one", (*TRAIN, "model.dropout=1.5"), ("model.dropout=1.5",)),
    Case("report-not-bool", (*TRAIN, "outputs.report=maybe"), ("outputs.report='maybe'", "true or false")),
    Case("monitor-mode", (*TRAIN, "monitor.mode=up"), ("monitor.mode='up'", "max, min")),
    Case("preemption-signal", (*TRAIN, "preemption.signal=BOGUS"), ("preemption.signal='BOGUS'", "USR1")),
    Case("twin-too-small", (*TRAIN, "dataset.synth.n_events=2"), ("dataset.synth.n_events=2", "≥ 3")),
    Case("data-root-empty", (*TRAIN[:-2], "hydra.run.dir={tmp}/run"), ("paths.data_root is empty",
                                                                      "EARTHCAST_DATA_ROOT"),
         env=(("EARTHCAST_DATA_ROOT", ""),)),
    Case("sweep-later-value", ("train", "-m", *TRAIN[1:-1], "dataset.batch_size=2,-4",
                               "hydra.sweep.dir={tmp}/sweep"), ("sweep job #1", "dataset.batch_size=-4",
                                                                "no job was started")),
    Case("sweep-later-option", ("train", "-m", "model=unet,nosuchmodel", "hydra.sweep.dir={tmp}/sweep"),
         ("unknown model 'nosuchmodel'",)),
    Case("eval-split", ("eval", "ckpt_path={ckpt}", "split=bogus", "hydra.run.dir={tmp}/run"),
         ("split='bogus'", "train, val, test")),
    Case("eval-nan-policy", ("eval", "ckpt_path={ckpt}", "nan_policy=ignore", "hydra.run.dir={tmp}/run"),
         ("nan_policy='ignore'",)),
    Case("predict-samples-negative", ("predict", "ckpt_path={ckpt}", "outputs.max_prediction_samples=-1",
                                      "hydra.run.dir={tmp}/run"), ("outputs.max_prediction_samples=-1",)),
    Case("sample-members-zero", ("sample", "members=0", "hydra.run.dir={tmp}/run"), ("members=0", "≥ 1")),
    Case("sample-device-cuda", ("sample", "device=cuda:0", "hydra.run.dir={tmp}/run"), ("device=cuda:0",
                                                                                        "device=cpu"),
         skip=NO_GPU_ONLY),
    # -- config names and keys (Hydra's errors, made one line)
    Case("unknown-model", ("train", "model=nosuchmodel", "hydra.run.dir={tmp}/run"),
         ("unknown model 'nosuchmodel'", "unet")),
    Case("unknown-key", ("train", "trainer.nosuchkey=1", "hydra.run.dir={tmp}/run"),
         ("unknown config key", "trainer.nosuchkey")),
    Case("unknown-command", ("frobnicate",), ("unknown subcommand",)),
    Case("replayed-key-gone", ("eval", "ckpt_path={tmp}/old.ckpt", "hydra.run.dir={tmp}/run"),
         ("old.ckpt was trained with the override model.retired_option", "earthcast version"),
         setup=_replayed_unknown_key),
    # -- output directories, checked before any work
    Case("run-dir-under-proc", (*TRAIN[:-1], "hydra.run.dir=/proc/earthcast/run"),
         ("cannot write the run directory /proc/earthcast/run", "hydra.run.dir=")),
    Case("run-dir-below-file", (*TRAIN[:-1], "hydra.run.dir={file}/run"), ("Not a directory", "hydra.run.dir="),
         setup=_regular_file),
    Case("run-dir-read-only-parent", (*TRAIN[:-1], "hydra.run.dir={tmp}/ro/run"),
         ("Permission denied", "hydra.run.dir="), setup=_read_only_parent, skip=ROOT_IGNORES_PERMISSIONS),
    Case("eval-run-dir-under-proc", ("eval", "ckpt_path={ckpt}", "hydra.run.dir=/proc/earthcast/run"),
         ("cannot write the run directory",)),
    Case("eval-run-dir-below-file", ("eval", "ckpt_path={ckpt}", "hydra.run.dir={file}/run"),
         ("Not a directory",), setup=_regular_file),
    Case("checkpoint-dir-below-file", (*TRAIN, "callbacks.model_checkpoint.dirpath={file}/ckpts"),
         ("cannot write the checkpoint directory", "callbacks.model_checkpoint.dirpath"), setup=_regular_file),
    # -- run directories
    Case("run-dir-locked", TRAIN, ("run directory", "is in use by earthcast train with pid 4242 on host node7"),
         setup=_lock_held),
    Case("run-dir-of-another-run", (*TRAIN, "seed=7"), ("holds another run", "seed=7", "ckpt_path="),
         setup=_another_run),
    # -- checkpoints
    Case("checkpoint-missing", ("eval", "ckpt_path=/nonexistent/best.ckpt"),
         ("checkpoint not found", "/nonexistent/best.ckpt")),
    Case("checkpoint-other-shape", ("eval", "ckpt_path={ckpt}", "model.base_units=8", "hydra.run.dir={tmp}/run"),
         ("does not fit model=unet", "shape mismatch", "model."), ),
    # -- data
    Case("data-check-missing-root", ("data", "check", "dataset=sevir", "paths.data_root={tmp}/absent"),
         ("data check found", "does not exist")),
    Case("data-check-corrupt-root", ("data", "check", "dataset=sevir", "dataset.root={tmp}/sevir"),
         ("data check found", "CATALOG.csv"), setup=_corrupt_catalog),
    Case("data-unknown-action", ("data", "destroy"), ("unknown data action 'destroy'", "synth, sevirlr, check")),
    Case("twin-other-settings-synth", ("data", "synth", *TINY_DATA, "dataset.synth.n_events=30",
                                       "paths.data_root={data}"),
         ("generated with other settings", "n_events", "force=true")),
    Case("twin-other-settings-train", (*TRAIN, "dataset.synth.n_events=30"),
         ("generated with other settings", "dataset.synth.n_events: 24 there, 30 asked")),
    Case("twin-missing-catalog", (*TRAIN[:-2], "paths.data_root={tmp}/data", "hydra.run.dir={tmp}/run"),
         ("CATALOG.csv is missing", "earthcast data synth force=true"), setup=_twin_without_catalog),
    Case("test-split-file-missing", (*TRAIN[:-2], "paths.data_root={tmp}/data", "hydra.run.dir={tmp}/run"),
         ("SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5", "is missing"), setup=_test_file_missing),  # before the fit
    Case("sevirlr-missing-src", ("data", "sevirlr", "src={tmp}/nosevir", "dst={tmp}/lr"),
         ("SEVIR root", "nosevir", "set src=")),
    # -- stored forecasts
    Case("stored-missing", ("eval", "predictions={tmp}/absent.nc", "hydra.run.dir={tmp}/run"),
         ("absent.nc not found",)),
    Case("stored-celsius-as-vil", ("eval", "predictions={tmp}/forecast.nc", "range_policy=fail",
                                   "hydra.run.dir={tmp}/run"), ("outside the VIL levels 0–255", "range_policy=warn"),
         setup=_celsius_anomalies),
    Case("stored-vil-over-255", ("eval", "predictions={tmp}/forecast.nc", "range_policy=fail",
                                 "hydra.run.dir={tmp}/run"), ("under 1% of the VIL levels", "VIL/255"),
         setup=_vil_over_255),
    Case("stored-range-policy", ("eval", "predictions={tmp}/forecast.nc", "range_policy=sometimes",
                                 "hydra.run.dir={tmp}/run"), ("range_policy='sometimes'", "warn, fail")),
]


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path, data_root, trained_run):
    if case.skip:
        pytest.skip(case.skip)
    ctx = {"tmp": tmp_path, "data": data_root, "ckpt": trained_run / "checkpoints" / "best.ckpt",
           "file": tmp_path / "a_file", "keep_open": []}
    if case.setup:
        case.setup(tmp_path, ctx)
    before = _outputs(tmp_path)
    args = [arg.format(**ctx) for arg in case.args]
    try:
        result = earthcast_in_process(*args, cwd=tmp_path, env=dict(case.env))
    finally:
        for fd in ctx["keep_open"]:
            os.close(fd)
    assert_one_line_error(result, *case.fragments)
    assert _outputs(tmp_path) == before, "an output that looks complete (or a temporary file) appeared"
    if case.setup is _another_run:  # the other run's checkpoint is left as it was
        assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] > 0


def _outputs(root: Path) -> set[Path]:
    return {path for pattern in COMPLETE_LOOKING for path in root.rglob(pattern)}
