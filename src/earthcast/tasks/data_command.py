"""`earthcast data synth | sevirlr | check`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from earthcast.data import synthesize
from earthcast.errors import UserError

console = Console()


def _print_report(report: dict) -> None:
    table = Table(title=f"{report.get('dataset', '')} at {report.get('root', '')}")
    table.add_column("split")
    columns = [k for k in ("events", "models", "sequences", "samples") if any(
        isinstance(v, dict) and k in v for v in report.get("splits", {}).values())]
    for column in columns:
        table.add_column(column, justify="right")
    for split, facts in report.get("splits", {}).items():
        table.add_row(split, *[str(facts.get(c, "")) for c in columns])
    console.print(table)
    for note in report.get("notes", []):
        console.print(f"  note: {note}")


def run_data(cfg: DictConfig):
    action = str(cfg.action)
    if action == "synth":
        root = synthesize(cfg.dataset, force=bool(cfg.force))
        console.print(f"synthetic {cfg.dataset.name} dataset at {root}")
        return root
    if action == "sevirlr":
        if not cfg.src or not cfg.dst:
            raise UserError("earthcast data sevirlr needs src=<SEVIR root> dst=<new SEVIR-LR root>")
        from earthcast.data.sevirlr import build_sevirlr

        root = build_sevirlr(Path(cfg.src), Path(cfg.dst))
        console.print(f"SEVIR-LR written to {root}; train on it with dataset=sevirlr paths.data_root=... "
                      f"dataset.root={root}")
        return root
    if action == "check":
        name = str(cfg.dataset.name)
        if name in ("sevir", "sevirlr"):
            from earthcast.data.sevir_check import check_sevir_root as check
        elif name == "enso":
            from earthcast.data.enso_check import check_enso_root as check
        else:
            raise UserError(f"no checker for dataset={name}")
        report = check(cfg.dataset)
        _print_report(report)
        return report
    raise UserError(f"unknown data action {action!r}; use: earthcast data synth | sevirlr | check")
