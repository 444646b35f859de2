"""The run directory of a command: named so that a requeued job finds it again, checked before any work, and
locked while a command writes in it.

    run_id()              the last part of the default run directory: `slurm-<job id>` inside a SLURM batch
                          job (a requeued job gets the same directory back), else `<date>/<time>`
    check_writable(dir)   a directory earthcast will write to, created and probed: one line when it cannot be
    RunLock(run_dir)      `<run dir>/.earthcast.lock` held (flock) while the command runs, with the holder's pid,
                          host and command in it; a second process in the same run directory exits with one line
    global_rank()         this process's rank in a multi-process run (0 when alone)

A lock whose holder is gone (killed, the node lost) is free again: the kernel drops a flock with its process,
and on filesystems without flock a lock naming a dead pid on this host, or an earlier incarnation of this
SLURM job, is taken over. Either way the takeover is reported in one line.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from earthcast.errors import UserError

LOCK_NAME = ".earthcast.lock"
#: SLURM job names of interactive allocations, where a shell runs many unrelated commands (as Lightning treats them)
INTERACTIVE_JOB_NAMES = ("bash", "interactive")
WHERE_TO_WRITE = "point hydra.run.dir= (or paths.output_root=, EARTHCAST_OUTPUT_ROOT) at a writable directory"


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def slurm_job_id() -> str | None:
    """The SLURM job this process runs in (array tasks: <array job>_<task>); None outside a batch job."""
    if os.environ.get("SLURM_JOB_NAME") in INTERACTIVE_JOB_NAMES:
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


_started = datetime.now()


def run_id() -> str:
    """The `${earthcast.run_id:}` resolver of configs/base.yaml (see the module docstring)."""
    job = slurm_job_id()
    return f"slurm-{job}" if job else _started.strftime("%Y-%m-%d/%H-%M-%S-%f")


def check_writable(directory: str | os.PathLike, what: str = "run directory", fix: str = WHERE_TO_WRITE,
                   create: bool = True) -> Path:
    """Prove a file can be written in `directory` (created if needed); one-line UserError otherwise. With
    create=False nothing is created: the probe goes to the nearest existing folder, where the run would create
    the missing ones (so a run refused later leaves no empty output folder behind)."""
    directory = Path(directory)
    probe_dir = directory
    if not create:
        while not probe_dir.exists() and probe_dir.parent != probe_dir:
            probe_dir = probe_dir.parent
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        elif not probe_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe_dir))
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".earthcast-probe-"):
            pass
    except OSError as err:
        raise UserError(f"cannot write the {what} {directory} ({describe_os_error(err)}); {fix}") from None
    return directory


def describe_os_error(err: OSError) -> str:
    """`Read-only file system` / `No space left on device: /x/y` — what went wrong, in one line."""
    reason = err.strerror or errno.errorcode.get(err.errno or 0, type(err).__name__)
    return f"{reason}: {err.filename}" if err.filename else reason


class RunLock:
    """See the module docstring. Re-entrant within a process: acquiring a directory it already holds is a no-op."""

    held: dict[Path, RunLock] = {}

    def __init__(self, run_dir: str | os.PathLike, command: str):
        self.run_dir = Path(run_dir).resolve()
        self.path = self.run_dir / LOCK_NAME
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self.run_dir in RunLock.held or global_rank() != 0:
            return  # this process holds it already, or rank 0 of this run does
        check_writable(self.run_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = _read(fd)
            if not _flock(fd):
                raise UserError(_in_use(self.run_dir, holder))
            if holder and not _flock_supported(fd) and not _stale(holder):
                raise UserError(_in_use(self.run_dir, holder) + f"; if that process is gone, delete {self.path}")
            if holder:  # printed: Hydra may not have configured logging yet
                print(f"earthcast: taking over the stale lock of {self.run_dir} ({_who(holder)}: not running)",
                      file=sys.stderr)
            _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "command": f"earthcast {self.command}",
                        "since": time.strftime("%Y-%m-%d %H:%M:%S"), "slurm_job": slurm_job_id(),
                        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0")})
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        RunLock.held[self.run_dir] = self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # an empty lock file is a free one; never unlinked, so no one locks a ghost
        finally:
            os.close(self.fd)  # drops the flock
            self.fd = None
            RunLock.held.pop(self.run_dir, None)


def _flock(fd: int) -> bool:
    """True when this process now holds the lock (or the filesystem has no flock: decided by the pid check)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:  # ENOLCK / EINVAL / EOPNOTSUPP: the filesystem has no locks
        if err.errno in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
            _NO_FLOCK.add(os.fstat(fd).st_dev)
            return True
        raise
    return True


_NO_FLOCK: set[int] = set()


def _flock_supported(fd: int) -> bool:
    return os.fstat(fd).st_dev not in _NO_FLOCK


def _stale(holder: dict) -> bool:
    """Whether the recorded holder is certainly gone (used only where flock is unavailable)."""
    if holder.get("slurm_job") and holder.get("slurm_job") == slurm_job_id():
        return holder.get("slurm_restart") != os.environ.get("SLURM_RESTART_COUNT", "0")  # a requeued job
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    if not text:
        return {}
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "command": "an unreadable lock"}
    return holder if isinstance(holder, dict) else {}


def _write(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode())


def _who(holder: dict) -> str:
    return (f"{holder.get('command', 'earthcast')} with pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')} since {holder.get('since', '?')}")


def _in_use(run_dir: Path, holder: dict) -> str:
    return (f"run directory {run_dir} is in use by {_who(holder)}; wait for it to finish or pick another "
            f"hydra.run.dir")
