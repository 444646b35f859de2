"""The CSV log of a resumed run continues the file, without the rows a killed run wrote after its checkpoint."""

from __future__ import annotations

import csv

from earthcast.lightning.loggers import ContinuingCSVLogger


def _rows(logger) -> list[dict]:
    with open(logger.experiment.metrics_file_path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_resumed_log_keeps_the_rows_of_its_checkpoint_and_continues(tmp_path):
    first = ContinuingCSVLogger(tmp_path, name="logs", version="csv")
    for step in range(5):
        first.log_metrics({"loss": float(step)}, step=step)
    first.save()
    assert first.experiment.data_rows() == 5
    # the checkpoint was saved after 3 rows; the run was killed after writing 2 more
    resumed = ContinuingCSVLogger(tmp_path, name="logs", version="csv", keep_rows=3)
    resumed.log_metrics({"loss": 30.0, "lr": 0.1}, step=3)  # a new column rewrites the header
    resumed.save()
    assert [(row["step"], row["loss"], row["lr"]) for row in _rows(resumed)] == [
        ("0", "0.0", ""), ("1", "1.0", ""), ("2", "2.0", ""), ("3", "30.0", "0.1")]


def test_without_a_checkpoint_record_every_row_stays(tmp_path):
    first = ContinuingCSVLogger(tmp_path, name="logs", version="csv")
    first.log_metrics({"loss": 1.0}, step=0)
    first.save()
    again = ContinuingCSVLogger(tmp_path, name="logs", version="csv")
    again.log_metrics({"loss": 2.0}, step=1)
    again.save()
    assert [row["step"] for row in _rows(again)] == ["0", "1"]
