"""The papers' reported scores (published.yaml), put beside an evaluation's with what is known to differ.

`published_comparison(name, evaluation)` gives, for every model and score of the table, the published value,
ours with its interval, and whether the interval covers the published value; plus the protocol entries the
paper states that differ from the run's (scored grid, frames, thresholds, split, real or synthetic data, …).
A covered value says the published number is plausible for our model on our test set, nothing more: when
the protocols differ the numbers measure different things.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from earthcast.errors import UserError
from earthcast.metrics.evaluation import Evaluation, covers

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")


@lru_cache(maxsize=1)
def published_tables() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(PUBLISHED_FILE.read_text())


def published_table(name: str) -> dict[str, Any]:
    tables = published_tables()
    if name not in tables:
        raise UserError(f"published={name!r} is not a published table; use one of: {', '.join(tables)}")
    return tables[name]


def protocol_differences(stated: dict[str, Any], ours: dict[str, Any] | None) -> list[str]:
    """'key: ours … vs paper …' for each protocol entry the paper states that our run does not share."""
    ours = ours or {}
    found = []
    for key, value in stated.items():
        mine = ours.get(key)
        if mine is None:
            found.append(f"{key}: not recorded here vs paper {value}")
        elif _normalised(mine) != _normalised(value):
            found.append(f"{key}: ours {mine} vs paper {value}")
    return found


def _normalised(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalised(item) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def published_comparison(name: str, evaluation: Evaluation) -> dict[str, Any]:
    """The table `name` beside `evaluation` (see the module docstring); JSON-ready."""
    table = published_table(name)
    rows = []
    for model, values in table["models"].items():
        for key, value in values.items():
            interval = evaluation.interval(key)
            rows.append({"model": model, "score": key, "published": value, "ours": evaluation.scores.get(key),
                         "interval": interval, "covered": covers(interval, float(value))})
    return {"name": name, "citation": " ".join(str(table["citation"]).split()),
            "protocol_differences": protocol_differences(table["protocol"], evaluation.protocol), "rows": rows}
