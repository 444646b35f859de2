"""A CSV logger that continues its file when a run is resumed in the same directory.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a resumed run would lose the epochs
before the checkpoint. Here the file is kept and its header adopted; new columns still rewrite the header.
A resumed run passes `keep_rows`, the number of rows the file held when its checkpoint was saved
(earthcast.lightning.checkpoint.RunRecord): rows a killed run wrote after that save are dropped before the
first new one is appended, so no step appears twice.
"""

from __future__ import annotations

import csv
import io

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from earthcast.io import write_text


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, keep_rows: int | None = None) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            if keep_rows is not None:
                self._truncate(keep_rows)
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """Keep earlier rows (the parent would delete them)."""

    def _truncate(self, keep_rows: int) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            rows = list(csv.reader(handle))
        if len(rows) <= keep_rows + 1:
            return
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows[:keep_rows + 1])
        write_text(self.metrics_file_path, text.getvalue())

    def data_rows(self) -> int:
        """Rows written to the file so far (the header not counted)."""
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            return max(0, sum(1 for _ in csv.reader(handle)) - 1)


class ContinuingCSVLogger(CSVLogger):
    def __init__(self, *args, keep_rows: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_rows = keep_rows

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir, keep_rows=self.keep_rows)
        return self._experiment
