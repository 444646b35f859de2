"""One evaluation's scores with their uncertainty and protocol, and paired comparisons between evaluations.

An `Evaluation` is what an eval/train run leaves in its directory (metrics.json, metrics_by_lead.csv,
metrics_by_group.csv, replicates.nc) or what scoring a stored forecast returns. Differences between two
forecasts are paired: both were resampled with the same event weights (earthcast.metrics.bootstrap), so the
difference of replicate b is the difference on one resample of events. That holds for the persistence and
climatology references scored beside the model, and for another run or forecast file when its protocol
fingerprint (the same samples, scored the same way) and bootstrap settings are ours.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from earthcast.errors import UserError
from earthcast.metrics.base import current_score_name
from earthcast.metrics.bootstrap import ReplicateScores, interval_of, percentile_interval
from earthcast.metrics.protocol import differences

#: lower is better
LOWER_IS_BETTER = re.compile(r"^(mse|rmse|mae|crps|nino34_rmse|mean_intensity_error|far_.*)$")
#: neither direction is better (a count, a bias whose ideal is 1, a ratio whose ideal is 1, a histogram)
NEUTRAL = re.compile(r"^(n_samples|n_samples_excluded|n_units|frequency_bias_.*|spread_skill_ratio|mean_error|rank_hist_\d+)$")
REFERENCES = ("persistence", "climatology")
TABLES = {"all": None, "by_lead": "lead", "by_group": "group"}


def direction(key: str) -> int:
    """+1 when higher is better, −1 when lower is better, 0 when neither (for the key without its prefix)."""
    name = key.rsplit("/", 1)[-1]
    if NEUTRAL.match(name):
        return 0
    return -1 if LOWER_IS_BETTER.match(name) else 1


@dataclass
class Evaluation:
    """Scores (flat dict), tables, bootstrap replicates and the run's protocol and model record."""

    label: str
    scores: dict[str, Any]
    by_lead: pd.DataFrame | None = None
    by_group: pd.DataFrame | None = None
    replicates: ReplicateScores | None = None
    protocol: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_run_dir(cls, path: str | Path, label: str | None = None) -> Evaluation:
        """What an eval or train run left in `path` (metrics.json and, when there, the tables and replicates)."""
        path = Path(path)
        metrics_file = path / "metrics.json"
        if not metrics_file.is_file():
            raise UserError(f"{path} has no metrics.json; give an eval/train run directory or a forecast .nc file")
        try:
            payload = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{metrics_file} is not valid JSON ({err.msg}); rerun the evaluation") from None
        # score names of any version, as today's
        scores = {current_score_name(k): v for k, v in payload.items() if v is None or isinstance(v, (int, float))}
        tables = {name: pd.read_csv(path / f"metrics_{name}.csv") if (path / f"metrics_{name}.csv").is_file()
                  else None for name in ("by_lead", "by_group")}
        tables = {name: None if frame is None else frame.rename(columns=current_score_name)
                  for name, frame in tables.items()}
        replicates = ReplicateScores.load(path / "replicates.nc") if (path / "replicates.nc").is_file() else None
        model = payload.get("model") or {}
        return cls(label or model.get("name") or path.name, scores, tables["by_lead"], tables["by_group"],
                   replicates, payload.get("protocol"), model, {"path": str(path), "split": payload.get("split")})

    # ------------------------------------------------------------------------------------- intervals
    @property
    def level(self) -> float | None:
        return None if self.replicates is None else self.replicates.level

    def interval(self, key: str) -> list[float | None] | None:
        """[low, high] of a score of the "all" row (None without replicates or when undefined)."""
        if self.replicates is None:
            return None
        return interval_of(self.replicates.values("all", key), self.replicates.level)

    def intervals(self) -> dict[str, list[float | None]]:
        if self.replicates is None:
            return {}
        return {key: self.interval(key) for key in self.replicates.keys("all")}

    def reference_differences(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{reference: {key: {difference, interval}}}: model − persistence/climatology, paired."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for reference in REFERENCES:
            keys = [key for key in self.scores if f"{reference}/{key}" in self.scores and "/" not in key]
            pairs = {key: _difference(self, key, self, f"{reference}/{key}") for key in keys if direction(key)}
            if pairs:
                out[reference] = pairs
        return out

    def paired_with(self, other: Evaluation) -> bool:
        """Whether `other` scored the same samples the same way and resampled them with our settings."""
        return (self.replicates is not None and other.replicates is not None
                and not differences(self.protocol, other.protocol)
                and self.replicates.settings == other.replicates.settings)

    def differences_to(self, other: Evaluation) -> dict[str, dict[str, Any]]:
        """{key: {difference, interval}} of ours − theirs over the model scores both have; the interval is the
        paired one when `paired_with(other)`, else None."""
        paired = self.paired_with(other)
        keys = [key for key in self.scores if "/" not in key and key in other.scores and direction(key)]
        return {key: _difference(self, key, other, key, paired) for key in keys}

    def row_differences(self, other: Evaluation, table: str, prefix: str = "") -> pd.DataFrame:
        """Per lead or group: ours, theirs (`prefix` + key; `other` may be this evaluation, for its
        references), the difference and its paired interval (NaN when not paired), for every score with a
        direction that both tables have; long format, one row per (row, score)."""
        mine, theirs = getattr(self, table), getattr(other, table)
        if mine is None or theirs is None or mine.empty:
            return pd.DataFrame()
        row_column = TABLES[table]
        paired = other is self or self.paired_with(other)
        merged = mine if other is self else mine.merge(theirs, on=row_column, suffixes=("", "@other"))
        rows = []
        for key in mine.columns:
            if "/" in key or not direction(key) or key.endswith(("_ci_low", "_ci_high")):
                continue
            their_column = f"{prefix}{key}" if other is self else f"{prefix}{key}@other"
            if their_column not in merged and other is not self and f"{prefix}{key}" in merged and prefix:
                their_column = f"{prefix}{key}"
            if their_column not in merged:
                continue
            low = high = np.full(len(merged), np.nan)
            diff = _replicate_difference(self, table, key, other, f"{prefix}{key}") if paired else None
            if diff is not None:
                stored = self.replicates.rows(table)
                labels = [_row_key(table, value) for value in merged[row_column]]
                if all(label in stored for label in labels):
                    low, high = percentile_interval(diff[:, [stored.index(label) for label in labels]],
                                                    self.replicates.level)
            for i, (row, ours, value) in enumerate(zip(merged[row_column], merged[key], merged[their_column])):
                rows.append({row_column: row, "score": key, "model": ours, "reference": value,
                             "difference": ours - value, "ci_low": low[i], "ci_high": high[i]})
        return pd.DataFrame(rows)


def _row_key(table: str, value: Any) -> Any:
    """The row label as replicates.nc stores it (leads as numbers, groups as strings)."""
    return int(value) if table == "by_lead" else str(value)


def _replicate_difference(ours: Evaluation, table: str, key: str, theirs: Evaluation,
                          their_key: str) -> np.ndarray | None:
    mine = ours.replicates.values(table, key) if ours.replicates is not None else None
    other = theirs.replicates.values(table, their_key) if theirs.replicates is not None else None
    if mine is None or other is None or mine.shape[0] != other.shape[0]:
        return None
    if table != "all" and ours is not theirs:
        # align the other run's rows with ours by label
        their_rows = theirs.replicates.rows(table)
        mine_rows = ours.replicates.rows(table)
        if any(row not in their_rows for row in mine_rows):
            return None
        other = other[:, [their_rows.index(row) for row in mine_rows]]
    if np.float32 in (mine.dtype, other.dtype):
        # replicates.nc stores float32: round both sides alike so that identical forecasts differ by exactly 0
        return mine.astype(np.float32).astype(np.float64) - other.astype(np.float32).astype(np.float64)
    return mine - other


def _difference(ours: Evaluation, key: str, theirs: Evaluation, their_key: str, paired: bool = True) -> dict:
    a, b = ours.scores.get(key), theirs.scores.get(their_key)
    value = None if a is None or b is None else float(a) - float(b)
    interval = None
    if paired and ours.replicates is not None:
        diff = _replicate_difference(ours, "all", key, theirs, their_key)
        interval = interval_of(diff, ours.replicates.level) if diff is not None else None
    return {"difference": value, "interval": interval}


def excludes_zero(interval: list[float | None] | None) -> bool:
    return bool(interval) and None not in interval and (interval[0] > 0 or interval[1] < 0)


def covers(interval: list[float | None] | None, value: float) -> bool | None:
    if not interval or None in interval:
        return None
    return interval[0] <= value <= interval[1]


def protocol_warning(ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None, label: str) -> str | None:
    """One line naming what differs between two protocols, None when they agree."""
    found = differences(ours, theirs)
    if not found:
        return None
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    return f"protocol differs from {label}: {'; '.join(found[:3])}{more} — scores are not directly comparable"


def finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
