"""Run directories: named after the SLURM job inside a batch job, checked before any work, locked while a
command writes there, a dead holder's lock taken over."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from earthcast.errors import UserError
from earthcast.rundir import LOCK_NAME, RunLock, check_writable, global_rank, run_id, slurm_job_id

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture
def no_slurm(monkeypatch):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_a_batch_job_s_run_directory_is_named_after_the_job(no_slurm):
    assert "/" in run_id() and slurm_job_id() is None  # <date>/<time> outside SLURM
    no_slurm.setenv("SLURM_JOB_ID", "4242")
    assert run_id() == "slurm-4242"
    no_slurm.setenv("SLURM_ARRAY_JOB_ID", "40")
    no_slurm.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_id() == "slurm-40_3"  # each array task its own
    no_slurm.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation runs unrelated commands
    assert slurm_job_id() is None and "/" in run_id()


def test_rank_comes_from_the_launcher_s_environment(monkeypatch):
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert global_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert global_rank() == 3


def test_unwritable_places_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    for place, reason in ((tmp_path / "file" / "run", "Not a directory"), ("/proc/earthcast/run", "/proc")):
        with pytest.raises(UserError, match=reason) as error:
            check_writable(place)
        assert "hydra.run.dir=" in str(error.value) and "\n" not in str(error.value)
    assert check_writable(tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def test_a_read_only_filesystem_is_named(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    with pytest.raises(UserError, match=f"cannot write the run directory {tmp_path}/run .Read-only file system"):
        check_writable(tmp_path / "run")


def test_a_second_process_is_refused_and_a_released_lock_is_free(tmp_path):
    run_dir = tmp_path / "run"
    other = [sys.executable, "-c", "import sys; from earthcast.rundir import RunLock\n"
             "try:\n    RunLock(sys.argv[1], 'eval').acquire(); print('acquired')\n"
             "except Exception as err:\n    print(err)", str(run_dir)]
    with RunLock(run_dir, "train"):
        holder = json.loads((run_dir / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "earthcast train"
        refused = subprocess.run(other, capture_output=True, text=True, timeout=120).stdout
        assert f"run directory {run_dir} is in use by earthcast train with pid {os.getpid()}" in refused
        with RunLock(run_dir, "train"):  # re-entrant in the holding process
            pass
        assert RunLock.held
    assert (run_dir / LOCK_NAME).read_text() == "" and not RunLock.held  # released: empty, never unlinked
    assert subprocess.run(other, capture_output=True, text=True, timeout=120).stdout.strip() == "acquired"


def test_a_dead_holder_s_lock_is_taken_over_with_a_message(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "command": "earthcast train",
                                                 "since": "yesterday"}))
    with RunLock(run_dir, "train"):
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    message = capsys.readouterr().err
    assert f"taking over the stale lock of {run_dir}" in message and f"pid {dead.stdout.strip()}" in message
