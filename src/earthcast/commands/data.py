"""data tools: synth (synthetic twins), sevirlr (build SEVIR-LR), check (validate a root)

    earthcast data synth dataset=sevir_synth                  # the twin at dataset.root (force=true: again)
    earthcast data sevirlr src=<SEVIR root> dst=<new root>    # every 2nd frame, 3×3 max pooling
    earthcast data check dataset=sevir paths.data_root=...     # what the reader will see, problems listed
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from earthcast import data
from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint

ACTIONS = ("synth", "sevirlr", "check")
console = Console()


def prepare(words: list[str]) -> list[str]:
    """`earthcast data synth ...` → `action=synth ...`."""
    if words and words[0] in ACTIONS:
        return [f"action={words[0]}", *words[1:]]
    return words


def run(cfg: DictConfig, checkpoint: Checkpoint | None = None):
    action = str(cfg.action)
    if action == "synth":
        root = data.synthesize(cfg.dataset, force=bool(cfg.force))
        console.print(f"synthetic {cfg.dataset.name} dataset at {root}")
        return root
    if action == "sevirlr":
        if not cfg.src or not cfg.dst:
            raise UserError("earthcast data sevirlr needs src=<SEVIR root> dst=<new SEVIR-LR root>")
        from earthcast.data.sevir.sevirlr import build_sevirlr

        root = build_sevirlr(Path(cfg.src), Path(cfg.dst))
        console.print(f"SEVIR-LR written to {root}; train on it with dataset=sevirlr paths.data_root=... "
                      f"dataset.root={root}")
        return root
    if action == "check":
        report = data.check(cfg.dataset)
        _print_report(report)
        return report
    raise UserError(f"unknown data action {action!r}; use: earthcast data synth | sevirlr | check")


def _print_report(report: dict) -> None:
    table = Table(title=f"{report['dataset']} at {report['root']}")
    table.add_column("split")
    splits = report.get("splits", {})  # a root that failed early has none
    columns = [k for k in ("events", "models", "sequences", "samples")
               if any(isinstance(v, dict) and k in v for v in splits.values())]
    for column in columns:
        table.add_column(column, justify="right")
    for split, facts in splits.items():
        table.add_row(split, *[str(facts.get(c, "")) for c in columns])
    console.print(table)
    for note in report["notes"]:
        console.print(f"  note: {note}")
