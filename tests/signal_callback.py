"""A callback the end-to-end signal tests add to a real `earthcast` run (`+callbacks.signal._target_=...`): the
process sends itself a signal at a given training step or test batch, delivered by the kernel like a
scheduler's. It fires once per run directory (a marker file remembers), so the resumed run, composed with the
same overrides, runs through. Needs the repository root on PYTHONPATH (tests.conftest.SIGNAL_ENV)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SendSignal(Callback):
    def __init__(self, name: str, step: int | None = None, test_batch: int | None = None,
                 val_batch: int | None = None):
        self.signum = signal.Signals[f"SIG{name}"]
        self.step, self.test_batch, self.val_batch = step, test_batch, val_batch

    def _send(self, trainer) -> None:
        marker = Path(trainer.default_root_dir) / f".signal-sent-{self.signum.name}"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.step is not None and trainer.global_step == self.step:
            self._send(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.val_batch is not None and batch_idx == self.val_batch and not trainer.sanity_checking:
            self._send(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.test_batch is not None and batch_idx == self.test_batch:
            self._send(trainer)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.on_test_batch_start(trainer, pl_module, batch, batch_idx)
