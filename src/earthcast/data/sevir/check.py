"""Validate a SEVIR or SEVIR-LR root (real or synthetic) and report what earthcast will read from it.

`check_sevir_root(cfg_dataset)` never raises for a bad root: every problem becomes one line in
report["problems"] (and in report["notes"], which the CLI prints) and report["ok"] is False. It checks the
catalog (columns, parseable times, what the filters drop), every VIL file the kept events need (present,
readable, a uint8 `vil` of the configured frame shape, enough events for the catalog's file_index, an `id`
dataset that agrees with the catalog), and the date coverage of each split, and counts events and
sequences per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
from rich.progress import Progress

from earthcast.config import plain
from earthcast.data.base import CHECKERS, SPLITS
from earthcast.data.sevir.reader import SevirDataModule, inspect_vil_file, read_catalog, select_vil_events
from earthcast.errors import UserError


def _id_mismatches(path: Path, rows) -> int:
    """How many events' catalog id differs from the file's `id` entry at their file_index (0 if no `id`)."""
    with h5py.File(path, "r") as f:
        if "id" not in f:
            return 0
        ids = [x.decode() if isinstance(x, bytes) else str(x) for x in f["id"][()]]
    return sum(i >= len(ids) or ids[i] != event for event, i in zip(rows["id"], rows["file_index"]))


@CHECKERS.register("sevir")
@CHECKERS.register("sevirlr")
def check_sevir_root(cfg_dataset: Any, progress: bool = True) -> dict[str, Any]:
    """Validate the root named by cfg_dataset; see the module docstring. Returns the report dict."""
    cfg_dataset = plain(cfg_dataset)
    report: dict[str, Any] = {"dataset": str(cfg_dataset["name"]), "root": str(cfg_dataset["root"]),
                              "ok": True, "problems": [], "notes": [], "files": {}, "splits": {}}

    def problem(message: str) -> None:
        report["ok"] = False
        if message not in report["problems"]:
            report["problems"].append(message)
            report["notes"].append(f"problem: {message}")

    try:
        datamodule = SevirDataModule(cfg_dataset)
        catalog = read_catalog(datamodule.root)
        events, counts = select_vil_events(catalog, datamodule.max_pct_missing,
                                           str(datamodule.root / "CATALOG.csv"))
    except UserError as error:
        problem(str(error))
        return report
    report["catalog"] = counts
    report["grid"] = {"height": datamodule.height, "width": datamodule.width,
                      "frames_per_event": datamodule.frames_per_event, "frame_minutes": datamodule.frame_minutes}
    if counts["dropped_duplicate_rows"]:
        report["notes"].append(f"{counts['dropped_duplicate_rows']} VIL rows dropped: their event id appears "
                               f"more than once")
    if counts["dropped_missing_data"]:
        report["notes"].append(f"{counts['dropped_missing_data']} VIL events dropped: pct_missing > "
                               f"max_pct_missing={datamodule.max_pct_missing}")
    if events.empty:
        problem(f"{datamodule.root / 'CATALOG.csv'} has no usable VIL events (img_type == 'vil', "
                f"pct_missing ≤ {datamodule.max_pct_missing}, unique id)")
        return report

    bad_files = set()
    groups = list(events.groupby("file_name", sort=True))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"checking {datamodule.root}", total=len(groups))
        for file_name, rows in groups:
            path = datamodule.root / "data" / str(file_name)
            issue = inspect_vil_file(path, datamodule.height, datamodule.width, datamodule.frames_per_event,
                                     int(rows["file_index"].max()), str(rows["id"].iloc[0]))
            facts: dict[str, Any] = {"events": len(rows), "present": path.is_file()}
            if issue:
                problem(issue)
                bad_files.add(file_name)
            else:
                facts["size_bytes"] = path.stat().st_size
                mismatched = _id_mismatches(path, rows)
                if mismatched:
                    problem(f"{path}: {mismatched} catalog ids differ from the file's 'id' at their file_index; "
                            f"the catalog and the data do not match, download both again")
            report["files"][str(file_name)] = facts
            bar.advance(task)

    report["sequences_per_event"] = len(datamodule.starts)
    for split in SPLITS:
        date_range = datamodule.split_ranges[split]
        chosen = events[date_range.mask(events["time_utc"])]
        facts = {"range": str(date_range), "events": len(chosen),
                 "sequences": len(chosen) * len(datamodule.starts)}
        if len(chosen):
            facts["first"] = chosen["time_utc"].min().isoformat()
            facts["last"] = chosen["time_utc"].max().isoformat()
            facts["event_types"] = {str(k or "(random)"): int(v)
                                    for k, v in chosen["event_type"].value_counts().items()}
            unreadable = int(chosen["file_name"].isin(bad_files).sum())
            if unreadable:
                facts["events_in_bad_files"] = unreadable
        else:
            problem(f"dataset.splits.{split} ({date_range}) selects no events; widen the date range")
        report["splits"][split] = facts
    times = events["time_utc"]
    report["notes"].append(f"{len(events)} VIL events from {times.min():%Y-%m-%d} to {times.max():%Y-%m-%d} in "
                           f"{len(groups)} files; {len(datamodule.starts)} sequences of "
                           f"{datamodule.in_len}+{datamodule.out_len} frames per event")
    report["sizes_bytes"] = int(np.sum([f.get("size_bytes", 0) for f in report["files"].values()]))
    return report
