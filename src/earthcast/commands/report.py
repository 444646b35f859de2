"""compare many runs: one table and plot of their headline scores with intervals, sorted, protocols checked

    earthcast report outputs/train/multirun/<date>/<time>          # every run under a sweep directory
    earthcast report <run dir> <run dir> ... sort_by=mse           # named runs (eval or train run dirs)

Writes to its run directory report.md (the table, the protocol check, the plot), runs.csv (one row per run:
scores, interval bounds, protocol fingerprint) and plots/runs.png (each score with its interval, one panel per
score). Runs are grouped by protocol fingerprint: a one-line warning names what differs when there is more
than one group, and the difference to the best run (with its paired interval) is given only within the best
run's group, where the runs scored the same samples the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from earthcast.commands import is_override
from earthcast.errors import UserError
from earthcast.io import write_csv, write_text
from earthcast.metrics.evaluation import Evaluation, direction, finite, protocol_warning
from earthcast.metrics.report import format_difference, format_interval, markdown_table
from earthcast.viz.scores import plot_runs

log = logging.getLogger("earthcast")
#: overrides that locate a run rather than define it (left out of run labels)
LOCATING = ("hydra.", "paths.", "ckpt_path")


def prepare(words: list[str]) -> list[str]:
    """`earthcast report a b` → `runs=['a','b']` (the command's own words are run directories)."""
    runs = [word for word in words if not is_override(word) and not word.startswith("-")]
    if not runs:
        return words
    rest = [word for word in words if word not in runs]
    quoted = ",".join("'" + run.replace("\\", "\\\\").replace("'", "\\'") + "'" for run in runs)
    return [f"runs=[{quoted}]", *rest]


def run(cfg: DictConfig, checkpoint=None) -> pd.DataFrame:
    run_dir = Path(cfg.paths.output_dir)
    runs = find_runs([Path(str(path)) for path in cfg.runs or []])
    evaluations = [Evaluation.from_run_dir(path, label=run_label(path, root)) for path, root in runs]
    keys = [key for key in cfg.scores if any(finite(e.scores.get(key)) for e in evaluations)]
    if not keys:
        raise UserError(f"none of the runs has any of scores={list(cfg.scores)}; set scores=[...] to keys of "
                        "their metrics.json")
    sort_by = str(cfg.sort_by) if cfg.sort_by else keys[0]
    if sort_by not in keys:
        raise UserError(f"sort_by={sort_by} is not a score these runs have; use one of: {', '.join(keys)}")
    ordered = sort_runs(evaluations, sort_by)
    groups = protocol_groups(ordered)
    warnings = [w for e in ordered[1:] if (w := protocol_warning(ordered[0].protocol, e.protocol, e.label))]
    if len(groups) > 1:
        log.warning("%d protocols among %d runs (see the protocol column): %s", len(groups), len(ordered),
                    warnings[0] if warnings else "")
    frame = runs_frame(ordered, keys, sort_by, groups)
    write_csv(run_dir / "runs.csv", frame)
    plot_rows = [{"label": e.label, **{k: e.scores.get(k) for k in keys}, **{f"{k}_ci": e.interval(k) for k in keys}}
                 for e in ordered]
    plot_runs(plot_rows, keys, run_dir / "plots" / "runs.png")
    write_text(run_dir / "report.md", "\n".join(report_lines(ordered, keys, sort_by, groups, warnings)) + "\n")
    _print(ordered, keys, sort_by, groups, run_dir)
    return frame


def find_runs(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(run dir, the path it was found under) for each given run dir, or each run dir below a given directory
    (a sweep): any directory holding a metrics.json, in path order."""
    if not paths:
        raise UserError("earthcast report needs run directories: earthcast report <run dir or sweep dir> ...")
    found: list[tuple[Path, Path]] = []
    for path in paths:
        if not path.is_dir():
            raise UserError(f"{path} is not a directory; give eval/train run directories or a sweep directory")
        if (path / "metrics.json").is_file():
            found.append((path, path.parent))
            continue
        below = sorted((m.parent for m in path.rglob("metrics.json")), key=lambda p: [_natural(s) for s in p.parts])
        if not below:
            raise UserError(f"{path} holds no run with a metrics.json; run `earthcast eval` or `train` first")
        found += [(run_dir, path) for run_dir in below]
    return found


def _natural(part: str) -> tuple:
    return (0, int(part), "") if part.isdigit() else (1, 0, part)


def run_label(path: Path, root: Path) -> str:
    """A sweep job's overrides (those that define the run), else the run directory relative to where it was found."""
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        words = [w for w in (yaml.safe_load(overrides.read_text()) or []) if not str(w).startswith(LOCATING)]
        if words and (path.parent / "multirun.yaml").is_file():
            return " ".join(str(w) for w in words)
    relative = path.relative_to(root) if path.is_relative_to(root) else path
    return str(relative) if str(relative) != "." else path.name


def sort_runs(evaluations: list[Evaluation], key: str) -> list[Evaluation]:
    """Best first on `key` (its direction decides); runs without the score last."""
    sign = direction(key) or 1
    return sorted(evaluations, key=lambda e: (not finite(e.scores.get(key)),
                                              -sign * float(e.scores[key]) if finite(e.scores.get(key)) else 0.0))


def protocol_groups(evaluations: list[Evaluation]) -> dict[str, str]:
    """fingerprint → a letter, in order of first appearance (A = the best run's protocol)."""
    groups: dict[str, str] = {}
    for evaluation in evaluations:
        fingerprint = (evaluation.protocol or {}).get("fingerprint", "unrecorded")
        groups.setdefault(fingerprint, chr(ord("A") + len(groups)))
    return groups


def _group(evaluation: Evaluation, groups: dict[str, str]) -> str:
    return groups[(evaluation.protocol or {}).get("fingerprint", "unrecorded")]


def runs_frame(ordered: list[Evaluation], keys: list[str], sort_by: str, groups: dict[str, str]) -> pd.DataFrame:
    rows = []
    best = ordered[0]
    for rank, evaluation in enumerate(ordered, start=1):
        row: dict[str, Any] = {"rank": rank, "run": evaluation.label, "model": (evaluation.model or {}).get("name"),
                               "protocol": _group(evaluation, groups),
                               "fingerprint": (evaluation.protocol or {}).get("fingerprint"),
                               "n_samples": evaluation.scores.get("n_samples"), "path": evaluation.extra.get("path")}
        for key in keys:
            interval = evaluation.interval(key) or [None, None]
            row.update({key: evaluation.scores.get(key), f"{key}_ci_low": interval[0], f"{key}_ci_high": interval[1]})
        difference = evaluation.differences_to(best).get(sort_by) if evaluation is not best else None
        paired = difference is not None and difference["interval"] is not None
        row[f"{sort_by}_minus_best"] = difference["difference"] if difference else None
        row[f"{sort_by}_minus_best_ci_low"] = difference["interval"][0] if paired else None
        row[f"{sort_by}_minus_best_ci_high"] = difference["interval"][1] if paired else None
        rows.append(row)
    return pd.DataFrame(rows)


def report_lines(ordered: list[Evaluation], keys: list[str], sort_by: str, groups: dict[str, str],
                 warnings: list[str]) -> list[str]:
    best = ordered[0]
    lines = ["# Runs compared", "", f"{len(ordered)} runs, best first by {sort_by}. Values are "
             "`score [interval]` (each run's own bootstrap interval); Δ vs best is paired when the run shares the "
             "best run's protocol and bootstrap settings, else its interval is left out.", ""]
    headers = ["rank", "run", "protocol", "n_samples", *keys, f"Δ {sort_by} vs best"]
    rows = []
    for rank, evaluation in enumerate(ordered, start=1):
        cells = [rank, evaluation.label, _group(evaluation, groups), evaluation.scores.get("n_samples")]
        for key in keys:
            value = evaluation.scores.get(key)
            cells.append("–" if not finite(value) else f"{float(value):.4g} {format_interval(evaluation.interval(key))}")
        cells.append("best" if evaluation is best else format_difference(evaluation.differences_to(best).get(sort_by)))
        rows.append(cells)
    lines += [*markdown_table(headers, rows), "", "## Protocols", ""]
    protocol_rows = [[letter, fingerprint, sum(_group(e, groups) == letter for e in ordered)]
                     for fingerprint, letter in groups.items()]
    lines += markdown_table(["protocol", "fingerprint", "runs"], protocol_rows) + [""]
    if len(groups) > 1:
        lines += ["**Warning**: the runs were not all scored the same way; compare scores only within a protocol.",
                  "", *[f"- {warning}" for warning in warnings], ""]
    else:
        lines += ["All runs share one protocol: the same samples, scored the same way.", ""]
    lines += ["## Plot", "", "![headline scores with intervals](plots/runs.png)", "", "## Runs", ""]
    lines += markdown_table(["run", "path"], [[e.label, e.extra.get("path")] for e in ordered]) + [""]
    return lines


def _print(ordered: list[Evaluation], keys: list[str], sort_by: str, groups: dict[str, str], run_dir: Path) -> None:
    console = Console()
    table = Table(title=f"{len(ordered)} runs, best first by {sort_by}")
    for column in ("rank", "run", "protocol", *keys):
        table.add_column(column, justify="left" if column == "run" else "right")
    for rank, evaluation in enumerate(ordered, start=1):
        values = [f"{float(v):.4f}" if finite(v := evaluation.scores.get(key)) else "—" for key in keys]
        table.add_row(str(rank), evaluation.label, _group(evaluation, groups), *values)
    console.print(table)
    console.print(f"run directory: {run_dir}")
    for name in ("report.md", "runs.csv", "plots/runs.png"):
        console.print(f"  {name:<14} {run_dir / name}")
