"""A training run stopped by a signal loses no work: `last.ckpt` is saved at the next step boundary, then the
run stops with one line saying how to resume; inside a SLURM job the scheduler's warning signal
(`preemption.signal`, USR1 unless configured) also requeues the job, which resumes by itself because `train`
finds its run directory's last.ckpt (earthcast.commands.train).

The signal reaches earthcast.signals.GUARD, which defers while the training loop runs. At the end of every
training batch the ranks agree whether any of them got one (one all-reduce of a flag under DDP, so every rank
saves the same step), and `last.ckpt` is written through Lightning's trainer.save_checkpoint — atomically
(CheckpointReadOnce), with the optimizer, schedules, loop progress, the loader's position and the RNG states —
exactly as a ModelCheckpoint saving every n steps would. A signal that arrives during validation ends the fit
after that epoch, like early stopping, once ModelCheckpoint has saved the epoch's best.ckpt and last.ckpt.

The requeue is `scontrol requeue <job>`, as Lightning's SLURM connector and submitit do it; under
hydra/launcher=slurm the requeued job runs the same pickled sweep job, in the same sweep directory.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from earthcast.rundir import slurm_job_id
from earthcast.signals import GUARD, Stopped, signal_name

log = logging.getLogger("earthcast")


class StopOnSignal(Callback):
    """See the module docstring; `last` is where last.ckpt goes when no ModelCheckpoint is configured."""

    def __init__(self, last: str | Path, requeue_signal: int | None):
        self.last = Path(last)
        self.requeue_signal = requeue_signal

    # -- the window in which a signal waits for a step boundary: from the fit's setup to its end
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            GUARD.deferring = True

    def on_train_start(self, trainer, pl_module) -> None:
        GUARD.reclaim(signal.SIGTERM)  # the ranks agree through _requested() at every step instead

    def on_exception(self, trainer, pl_module, exception) -> None:
        GUARD.deferring = False

    def on_train_end(self, trainer, pl_module) -> None:
        if self._requested(trainer):  # after a validation (see on_train_epoch_end), its epoch saved
            self._stop(trainer, self._saved_at_this_step(trainer) or self._save(trainer),
                       f"at step {trainer.global_step}, after epoch {trainer.current_epoch - 1}")
        GUARD.deferring = False

    def teardown(self, trainer, pl_module, stage: str) -> None:
        GUARD.deferring = False
        if stage == "fit" and GUARD.received is not None:  # before the first step (restoring, sanity checks)
            raise Stopped(GUARD.received)

    # -- step and epoch boundaries
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._requested(trainer):
            # the step's own log row: Lightning writes it right after this hook, which the stop skips
            trainer._logger_connector.update_train_step_metrics()
            self._stop(trainer, self._save(trainer), f"at step {trainer.global_step} (epoch {trainer.current_epoch})")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._requested(trainer):
            # after validation: end the fit the way early stopping does, so that ModelCheckpoint (which runs
            # after this callback) still saves this epoch's best and last; on_train_end then stops
            trainer.should_stop = True

    def _requested(self, trainer) -> bool:
        return bool(trainer.strategy.reduce_boolean_decision(GUARD.received is not None, all=False))

    def _saver(self, trainer) -> ModelCheckpoint | None:
        return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None)

    def _saved_at_this_step(self, trainer) -> Path | None:
        saver = self._saver(trainer)
        if saver is not None and saver.last_model_path and saver._last_global_step_saved == trainer.global_step:
            return Path(saver.last_model_path)
        return None

    def _save(self, trainer) -> Path:
        saver = self._saver(trainer)
        path = Path(saver.dirpath) / f"{saver.CHECKPOINT_NAME_LAST}{saver.FILE_EXTENSION}" if saver else self.last
        trainer.save_checkpoint(path, weights_only=False)
        if saver is not None:
            saver.last_model_path, saver._last_global_step_saved = str(path), trainer.global_step
        return path

    def _stop(self, trainer, saved: Path, where: str) -> None:
        GUARD.deferring = False
        signum = GUARD.received or signal.SIGTERM  # a rank that got none stops with the rank that did
        resume = f"resume with: earthcast train ckpt_path={saved}"
        job = slurm_job_id()
        if signum != self.requeue_signal or job is None:
            raise Stopped(signum, f"stopped by {signal_name(signum)} {where}: saved {saved}; {resume}")
        if not trainer.is_global_zero:
            raise Stopped(signum)
        failure = requeue(job)
        if failure:
            raise Stopped(signum, f"{signal_name(signum)} {where}: saved {saved}, but requeueing SLURM job {job} "
                                  f"failed ({failure}); {resume}")
        raise Stopped(signum, f"{signal_name(signum)} {where}: saved {saved} and requeued SLURM job {job}; it "
                              f"resumes from there in {Path(trainer.default_root_dir).resolve()}")


def requeue(job: str) -> str:
    """`scontrol requeue <job>`; what went wrong, or "" when it worked."""
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"scontrol: {err}"
    if result.returncode != 0:
        return f"scontrol exit {result.returncode}: {(result.stderr or result.stdout).strip()[:200]}"
    log.info("requeued SLURM job %s", job)
    return ""
