"""Signals: a command stopped by SIGTERM, SIGINT or a scheduler's warning signal says so and exits non-zero.

`GUARD` is installed once per process, before any work (`earthcast.cli`). A signal normally stops the command
at once by raising `Stopped` wherever the main thread is; temporary files are removed on the way out (the
writers discard them on any exception), so nothing that looks complete is left behind. While a training loop
runs it defers instead (`GUARD.deferring`): the loop saves `last.ckpt` at its next step boundary and raises
`Stopped` itself (earthcast.lightning.preemption). A second SIGINT or SIGTERM during that wait stops at once.

The exit code is 128 + the signal number, as a shell reports a process killed by the signal: SIGINT 130,
SIGTERM 143, SIGUSR1 138 — never 0, so a scheduler or a batch script never counts a stopped run as done.
"""

from __future__ import annotations

import signal
import threading

from earthcast.errors import UserError

#: signals that always stop a command; the scheduler's warning signal (preemption.signal) is added per run
STOPPING = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A command stopped by a signal: the CLI prints `message` as one line and exits with 128 + signum.

    A BaseException, like KeyboardInterrupt, so that `except Exception` blocks on the way out (Hydra's job
    runner, submitit's) let it through."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = int(signum)
        self.message = message

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal_name(self.signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def parse_signal(value, key: str = "preemption.signal") -> signal.Signals:
    """USR1, SIGUSR1 or 10 → signal.SIGUSR1; a one-line error for anything else."""
    text = str(value).strip().upper()
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[text if text.startswith("SIG")
                                                                              else f"SIG{text}"]
    except (KeyError, ValueError):
        raise UserError(f"{key}={value!r} is not a signal; use a name such as USR1, USR2 or TERM") from None


class SignalGuard:
    """Records the signal that arrived and stops the command (see the module docstring)."""

    def __init__(self):
        self.received: int | None = None
        self.deferring = False
        self.installed: set[int] = set()

    def install(self, *signums: int) -> None:
        """Handle SIGTERM, SIGINT and `signums` from now on (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (*STOPPING, *signums):
            if int(signum) not in self.installed:
                signal.signal(signum, self._handle)
                self.installed.add(int(signum))

    def reclaim(self, signum: int) -> None:
        """Handle `signum` here alone again (Lightning's trainer adds its own SIGTERM handler, which would end
        a validation loop mid-way instead of letting the training loop reach its step boundary)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signum, self._handle)

    def reset(self) -> None:
        self.received, self.deferring = None, False

    def _handle(self, signum: int, frame) -> None:
        again = self.received is not None and signum in STOPPING
        self.received = self.received or signum
        if self.deferring and not again:
            return  # the training loop saves at its next step boundary, then raises Stopped
        if again and self.deferring:
            raise Stopped(signum, f"stopped by a second {signal_name(signum)} before the training step finished; "
                                  f"checkpoints/last.ckpt holds the last completed save")
        raise Stopped(signum)


GUARD = SignalGuard()
