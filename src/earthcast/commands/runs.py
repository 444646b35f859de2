"""list past runs under a root (default: the output root): command, status, headline scores, overrides

    earthcast runs                          # every run under outputs/, newest first
    earthcast runs outputs/train/multirun   # a sweep's trials
    earthcast runs root=/scratch/me/outputs limit=100

Read from the run directories themselves (Hydra's .hydra/ record of each run, and what the run wrote), no
server. Status: `complete` when the command's result exists (metrics.json, predictions.nc, info.json, a
converted checkpoint), `resumable` for a train run that stopped after writing checkpoints/last.ckpt (continue
it with ckpt_path=<run>/checkpoints/last.ckpt), `incomplete` otherwise (running, failed or killed).
Headline scores are those the command's summary shows; names older versions stored are read under today's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint
from earthcast.metrics.base import current_score_name
from earthcast.metrics.report import summary_keys

#: the file that says a command finished
RESULTS = {"train": "metrics.json", "eval": "metrics.json", "sample": "metrics.json", "predict": "predictions.nc",
           "info": "info.json"}
#: headline scores shown per run
SHOWN_SCORES = 3


def prepare(words: list[str]) -> list[str]:
    """`earthcast runs <root>` → `root=<root>`."""
    return [f"root={word}" if "=" not in word and not word.startswith("-") else word for word in words]


@dataclass
class Run:
    path: Path
    command: str
    overrides: list[str]
    status: str
    started: float
    scores: dict[str, float | None] = field(default_factory=dict)


def find_runs(root: Path) -> list[Run]:
    """Every run directory under `root` (one holding Hydra's .hydra/hydra.yaml), newest first."""
    runs = []
    for record in root.rglob(".hydra/hydra.yaml"):
        run_dir = record.parent.parent
        try:
            hydra = OmegaConf.load(record).hydra
            overrides = list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
        except Exception:  # noqa: BLE001 - a half-written record: list the run without its details
            hydra, overrides = None, []
        command = str(hydra.job.config_name) if hydra is not None else "?"
        runs.append(Run(run_dir, command, [str(o) for o in overrides], _status(run_dir, command),
                        record.stat().st_mtime, _scores(run_dir)))
    return sorted(runs, key=lambda run: run.started, reverse=True)


def _status(run_dir: Path, command: str) -> str:
    result = RESULTS.get(command)
    if result and (run_dir / result).exists():
        return "complete"
    if command == "convert" and any((run_dir / "checkpoints").glob("*.ckpt")):
        return "complete"
    if command == "train" and (run_dir / "checkpoints" / "last.ckpt").exists():
        return "resumable"
    return "incomplete"


def _scores(run_dir: Path) -> dict[str, float | None]:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    scores = {current_score_name(key): value for key, value in stored.items()}
    return {key: scores[key] for key in summary_keys(scores)[:SHOWN_SCORES]}


def run(cfg: DictConfig, checkpoint: Checkpoint | None = None) -> list[Run]:
    root = Path(str(cfg.root)).expanduser()
    if not root.is_dir():
        raise UserError(f"runs root {root} is not a directory; give the output root (earthcast runs <dir>)")
    runs = find_runs(root)[: int(cfg.limit)]
    console = Console()
    if not runs:
        console.print(f"no runs under {root}")
        return runs
    table = Table(title=f"runs under {root}")
    for column in ("run", "command", "status", "scores", "overrides"):
        table.add_column(column, overflow="fold")
    for item in runs:
        scores = ", ".join(f"{k} {'—' if v is None else f'{v:.4g}'}" for k, v in item.scores.items())
        overrides = " ".join(o for o in item.overrides if not o.startswith("hydra."))
        table.add_row(str(item.path.relative_to(root)) or ".", item.command, item.status, scores, overrides)
    console.print(table)
    return runs
