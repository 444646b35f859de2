"""One progress line per phase of a run, with the time left: a Lightning callback.

    training   epoch 3/12 · step 150/600 · 1:12 elapsed · about 3:36 left
    training   done: 600 steps in 4:49 (0.48 s/step with validation)
    testing    batch 4/15 · 0:02 elapsed · about 0:07 left
    testing    done: 117 samples in 0:09

Lightning's progress bar shows the current epoch; this adds the whole phase, so a newcomer running
`make demo` knows how long to wait. The estimate is elapsed time per optimizer step (validation included)
times the steps left. It only prints: training and its results do not depend on it. One of the default
callbacks (configs/callbacks/default.yaml); `callbacks.phase_progress=null` turns it off.
"""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar

log = logging.getLogger("earthcast")


def clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss from an hour)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class PhaseProgress(Callback):
    """Prints a line after every `every_n_epochs` training epochs (validation included) with the steps done,
    the elapsed time and an estimate of the time left, one a quarter of the way through testing, and one
    when training and testing end."""

    def __init__(self, every_n_epochs: int):
        self.every_n_epochs = max(1, int(every_n_epochs))
        self._started: dict[str, float] = {}

    # -- output ----------------------------------------------------------------------------------------
    @staticmethod
    def _say(trainer: L.Trainer, phase: str, text: str) -> None:
        if not trainer.is_global_zero:
            return
        line = f"{phase:<10} {text}"
        bar = trainer.progress_bar_callback
        if isinstance(bar, RichProgressBar) and bar.is_enabled and bar.progress is not None:
            bar.progress.console.print(line, highlight=False)  # above the live bar, not through it
        else:
            log.info(line)

    def _elapsed(self, phase: str) -> float:
        return time.perf_counter() - self._started.get(phase, time.perf_counter())

    # -- training --------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started["training"] = time.perf_counter()
        self._start_step = trainer.global_step

    def _total_steps(self, trainer: L.Trainer) -> int | None:
        try:
            total = int(trainer.estimated_stepping_batches)
        except (TypeError, ValueError, OverflowError):
            return None
        return total if 0 < total < 10**9 else None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the epoch's validation, so the estimate includes what validation costs
        if trainer.sanity_checking or trainer.state.fn != "fit" or "training" not in self._started:
            return
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        step, total = trainer.global_step, self._total_steps(trainer)
        elapsed = self._elapsed("training")
        text = f"epoch {epoch}/{trainer.max_epochs} · step {step}"
        if total:
            text += f"/{total}"
        text += f" · {clock(elapsed)} elapsed"
        done = step - self._start_step
        if total and done > 0 and step < total:
            text += f" · about {clock(elapsed / done * (total - step))} left"
        self._say(trainer, "training", text)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "training" not in self._started:
            return
        done, elapsed = trainer.global_step - self._start_step, self._elapsed("training")
        rate = f" ({elapsed / done:.2f} s/step with validation)" if done else ""
        self._say(trainer, "training", f"done: {done} steps in {clock(elapsed)}{rate}")

    # -- testing ---------------------------------------------------------------------------------------
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started["testing"] = time.perf_counter()
        self._test_samples = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        inputs = batch.get("inputs") if isinstance(batch, dict) else None
        self._test_samples += int(inputs.shape[0]) if inputs is not None else 0
        # one estimate, a quarter of the way through (from the time per batch so far)
        total = sum(int(n) for n in trainer.num_test_batches if 0 < n < float("inf"))
        done = batch_idx + 1
        if dataloader_idx == 0 and total >= 4 and done == total // 4:
            elapsed = self._elapsed("testing")
            self._say(trainer, "testing", f"batch {done}/{total} · {clock(elapsed)} elapsed · "
                                          f"about {clock(elapsed / done * (total - done))} left")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = f"{self._test_samples} samples" if self._test_samples else "test split"
        self._say(trainer, "testing", f"done: {samples} in {clock(self._elapsed('testing'))}")
