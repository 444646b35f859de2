"""data tools: synth (synthetic twins), sevirlr (build SEVIR-LR), check (validate a root)

    earthcast data synth dataset=sevir_synth                  # the twin at dataset.root (force=true: again)
    earthcast data sevirlr src=<SEVIR root> dst=<new root>    # every 2nd frame, 3×3 max pooling
    earthcast data check dataset=sevir paths.data_root=...     # what the reader will see, problems listed
    earthcast data check dataset=gridded dataset.path=era5/*.nc dataset.variable=t2m   # shapes, coverage, gaps
    earthcast data synth dataset=gridded_synth                # an example store for dataset=gridded

`data check` prints its report and exits 2 when it found a problem (0 when the root is usable), so a batch
script can use it as a gate. `data synth` on a root that already holds the twin with the same settings says so
and leaves it; a twin made with other settings is refused unless force=true regenerates it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from earthcast import data
from earthcast.commands import is_override
from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint

ACTIONS = ("synth", "sevirlr", "check")
console = Console()


def prepare(words: list[str]) -> list[str]:
    """`earthcast data synth ...` → `action=synth ...`."""
    if words and words[0] in ACTIONS:
        return [f"action={words[0]}", *words[1:]]
    if words and not is_override(words[0]) and not words[0].startswith("-"):
        raise UserError(f"unknown data action {words[0]!r}; use one of: {', '.join(ACTIONS)} "
                        f"(earthcast data <action> [key=value ...])")
    return words


def run(cfg: DictConfig, checkpoint: Checkpoint | None = None):
    action = str(cfg.action)
    if action == "synth":
        existed = Path(cfg.dataset.root).exists() and not cfg.force
        root = data.synthesize(cfg.dataset, force=bool(cfg.force))
        console.print(f"synthetic {cfg.dataset.name} dataset at {root}" if not existed else
                      f"synthetic {cfg.dataset.name} dataset at {root} is up to date (same settings); "
                      f"force=true generates it again")
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
        problems = report.get("problems", [])
        if problems or not report.get("ok", True):
            more = f" (and {len(problems) - 1} more, listed above)" if len(problems) > 1 else ""
            raise UserError(f"data check found {len(problems) or 'a'} problem(s) in {report['root']}: "
                            f"{problems[0] if problems else 'see above'}{more}")
        return report
    raise UserError(f"unknown data action {action!r}; use one of: {', '.join(ACTIONS)}")


def _print_report(report: dict) -> None:
    table = Table(title=f"{report['dataset']} at {report['root']}")
    table.add_column("split")
    splits = report.get("splits", {})  # a root that failed early has none
    columns = [k for k in ("range", "first", "last", "frames", "events", "models", "sequences", "samples", "gaps",
                           "nan_fraction")
               if any(isinstance(v, dict) and k in v for v in splits.values())]
    for column in columns:
        table.add_column(column, justify="right")
    for split, facts in splits.items():
        table.add_row(split, *[str(facts.get(c, "")) for c in columns])
    console.print(table)
    facts = [f"{key} {report[key]}" for key in ("variable", "dims", "shape", "time_step", "first", "last", "gaps",
                                                 "nan_fraction") if key in report]
    if facts:
        console.print("  " + "; ".join(facts))
    for note in report["notes"]:
        console.print(f"  note: {note}")
