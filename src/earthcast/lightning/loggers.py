"""A CSV logger that continues its file when a run is resumed in the same directory.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a resumed run would lose the epochs
before the checkpoint. Here the file is kept and its header adopted; new columns still rewrite the header.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """Keep earlier rows (the parent would delete them)."""


class ContinuingCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
