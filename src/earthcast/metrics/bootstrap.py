"""Confidence intervals by resampling whole events, computed from sufficient statistics in flat memory.

Online Poisson bootstrap (Hanley & MacGibbon 2006, Comput. Methods Programs Biomed. 83:57; Chamandy et al.
2012, "Estimating uncertainty for massive data streams", Google): instead of drawing B resamples of the test
set, every resampling unit (a SEVIR event, an ENSO model-year) gets B integer weights w_b ~ Poisson(1), and
replicate b of each additive statistic (contingency counts, error sums, correlation moments) is
Σ_units w_b · statistic(unit). A score computed from replicate b's statistics is the score of one bootstrap
resample, so percentiles over b give the interval; memory is B copies of the statistics, whatever the number
of samples.

The weights of a unit come from a generator seeded by (seed, unit id) alone, so a unit gets the same weights
in every batch, on every DDP rank, in every run and for every forecast scored with the same settings. Two
forecasts of the same samples are therefore resampled identically: their replicate-by-replicate differences
are a paired bootstrap, and identical forecasts have a zero-width difference interval. Replicate statistics
are summed across ranks like the other states.

`ReplicateScores` holds the scores of every replicate as an xarray Dataset — `all` (replicate, score),
`by_lead` (replicate, lead, score), `by_group` (replicate, group, score) — written to replicates.nc so that a
later run can be compared with this one, paired, without rescoring it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from earthcast.errors import UserError
from earthcast.io import AtomicFile

#: P(K ≤ k) for K ~ Poisson(1), k = 0 … 19; beyond it the tail is below 1e-18 (inverse-CDF sampling keeps
#: the weights independent of numpy's Poisson algorithm, so they are the same on every numpy version)
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])
TABLES = ("all", "by_lead", "by_group")
#: fewer defined replicates than this share make an interval null (the score is mostly undefined on resamples)
MIN_DEFINED_SHARE = 0.5
#: a row (all samples, a lead, a group) resampled from fewer units gets no interval: with one event every
#: resample repeats it and the interval collapses to a point, with a few the percentiles mean little
MIN_UNITS = 5
#: bits per group of the bitmap that counts distinct resampling units (linear counting, Whang et al. 1990,
#: ACM TODS 15:208): exact in practice for a few units, within ~2 % up to ~20 000
UNIT_BITS = 4096


@dataclass(frozen=True)
class BootstrapSettings:
    """`bootstrap:` of the run config: replicates (0 = no intervals), level (e.g. 0.95), seed."""

    replicates: int = 0
    level: float = 0.95
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> BootstrapSettings:
        if cfg is None:
            return cls()
        unknown = sorted(set(cfg) - {"replicates", "level", "seed"})
        if unknown:
            raise UserError(f"bootstrap.{unknown[0]} is not a bootstrap option; use replicates, level, seed")
        replicates, level, seed = cfg["replicates"], cfg["level"], cfg["seed"]
        if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 0:
            raise UserError(f"bootstrap.replicates must be an integer ≥ 0 (0 = no intervals), got {replicates!r}")
        if 0 < replicates < 20:
            raise UserError(f"bootstrap.replicates={replicates} is too few for a percentile interval; use ≥ 20 "
                            "(1000 is the default) or 0 for none")
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise UserError(f"bootstrap.level must be a number in (0, 1), e.g. 0.95, got {level!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"bootstrap.seed must be an integer, got {seed!r}")
        return cls(int(replicates), float(level), int(seed))

    @property
    def active(self) -> bool:
        return self.replicates > 0

    def describe(self) -> dict[str, Any]:
        return {"replicates": self.replicates, "level": self.level, "seed": self.seed}


@lru_cache(maxsize=16384)
def unit_weights(unit: str, replicates: int, seed: int) -> np.ndarray:
    """The B Poisson(1) weights of one resampling unit: a function of (unit, replicates, seed) only."""
    digest = hashlib.sha256(f"{seed}\x00{unit}".encode()).digest()
    generator = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))
    weights = np.searchsorted(_POISSON1_CDF, generator.random(replicates), side="right").astype(np.float64)
    weights.setflags(write=False)
    return weights


def replicate_weights(units: Sequence[str], settings: BootstrapSettings) -> torch.Tensor:
    """B × n float64 weights of a batch's samples (samples of the same unit share their weights)."""
    return torch.from_numpy(np.stack([unit_weights(str(unit), settings.replicates, settings.seed)
                                      for unit in units], axis=1))


def unit_bit(unit: str) -> int:
    """The bitmap position of a resampling unit (from its sha256, so the same on every rank)."""
    return int.from_bytes(hashlib.sha256(f"unit\x00{unit}".encode()).digest()[:8], "little") % UNIT_BITS


def count_units(bitmap: torch.Tensor) -> torch.Tensor:
    """Distinct units behind each row of a (…, UNIT_BITS) 0/1 bitmap (linear counting, rounded)."""
    zeros = (bitmap == 0).sum(dim=-1).to(torch.float64).clamp(min=0.5)
    return torch.round(-UNIT_BITS * torch.log(zeros / UNIT_BITS)).to(torch.int64)


def weighted_sum(weights: torch.Tensor, increments: torch.Tensor) -> torch.Tensor:
    """Σ_n w[b, n] · increments[n, …] → B × … (float64): a batch's contribution to the replicates."""
    flat = increments.reshape(increments.shape[0], -1).to(torch.float64)
    return (weights.to(flat.device) @ flat).reshape(weights.shape[0], *increments.shape[1:])


def grouped_weighted_sum(weights: torch.Tensor, increments: torch.Tensor, groups: torch.Tensor,
                         n_groups: int) -> torch.Tensor:
    """B × G × … : `weighted_sum` of each group's samples (groups: n group indices)."""
    out = torch.zeros(weights.shape[0], n_groups, *increments.shape[1:], dtype=torch.float64,
                      device=increments.device)
    for group in groups.unique().tolist():
        chosen = (groups == group).to(increments.device)
        out[:, group] = weighted_sum(weights[:, chosen.to(weights.device)], increments[chosen])
    return out


# ------------------------------------------------------------------------------------------ replicates
class ReplicateScores:
    """Scores of every bootstrap replicate (see the module docstring); `data` is the xarray Dataset."""

    def __init__(self, data: xr.Dataset):
        self.data = data

    @classmethod
    def build(cls, settings: BootstrapSettings, unit: str, n_units: int, all_scores: Mapping[str, torch.Tensor],
              by_lead: Mapping[str, torch.Tensor], leads: Sequence[int], by_group: Mapping[str, torch.Tensor],
              groups: Sequence[Any]) -> ReplicateScores:
        """From {score: B} over all samples, {score: B × L} by lead and {score: B × G} by group."""
        variables = {"all": _stack(all_scores, ("replicate", "score_all"), ())}
        if by_lead:
            variables["by_lead"] = _stack(by_lead, ("replicate", "lead", "score_lead"), (len(leads),))
        if by_group:
            variables["by_group"] = _stack(by_group, ("replicate", "group", "score_group"), (len(groups),))
        coords = {"score_all": list(all_scores), "score_lead": list(by_lead), "score_group": list(by_group),
                  "lead": list(leads), "group": [str(group) for group in groups]}
        data = xr.Dataset(variables, coords={k: v for k, v in coords.items() if len(v)},
                          attrs={**settings.describe(), "unit": unit, "units": int(n_units)})
        return cls(data)

    @property
    def settings(self) -> BootstrapSettings:
        attrs = self.data.attrs
        return BootstrapSettings(int(attrs["replicates"]), float(attrs["level"]), int(attrs["seed"]))

    @property
    def level(self) -> float:
        return float(self.data.attrs["level"])

    def table(self, name: str) -> xr.DataArray | None:
        return self.data[name] if name in self.data else None

    def values(self, name: str, key: str) -> np.ndarray | None:
        """Replicates of one score: B (table "all") or B × rows; None when this table lacks it."""
        table = self.table(name)
        dim = table.dims[-1] if table is not None else None
        if table is None or key not in table[dim].values:
            return None
        return table.sel({dim: key}).values

    def keys(self, name: str) -> list[str]:
        table = self.table(name)
        return [] if table is None else [str(key) for key in table[table.dims[-1]].values]

    def rows(self, name: str) -> list[Any]:
        table = self.table(name)
        return [] if table is None or table.ndim < 3 else table[table.dims[1]].values.tolist()

    def save(self, path: str | Path) -> Path:
        """Scores as float32 (plenty for percentiles), compressed."""
        encoding = {name: {"dtype": "float32", "zlib": True, "complevel": 4} for name in self.data.data_vars}
        with AtomicFile(path, suffix=".nc") as tmp:
            self.data.to_netcdf(tmp, encoding=encoding)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ReplicateScores:
        try:
            with xr.open_dataset(path) as opened:
                return cls(opened.load())
        except Exception as err:  # netCDF4/h5py raise many types for unreadable files
            raise UserError(f"cannot read bootstrap replicates {path} ({type(err).__name__}); rerun the "
                            "evaluation that wrote it") from None


def _stack(columns: Mapping[str, torch.Tensor], dims: tuple[str, ...], row_shape: tuple[int, ...]) -> xr.DataArray:
    arrays = [np.asarray(value.detach().cpu().to(torch.float64).numpy()).reshape(-1, *row_shape)
              for value in columns.values()]
    return xr.DataArray(np.stack(arrays, axis=-1), dims=dims)


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) percentile interval over axis 0, leaving out undefined (NaN) replicates; NaN where fewer
    than MIN_DEFINED_SHARE of the replicates are defined."""
    replicates = np.asarray(replicates, dtype=np.float64)
    defined = np.isfinite(replicates)
    tail = (1.0 - level) / 2.0
    enough = defined.mean(axis=0) >= MIN_DEFINED_SHARE
    low, high = np.full(replicates.shape[1:], np.nan), np.full(replicates.shape[1:], np.nan)
    if enough.any():
        kept = np.where(defined, replicates, np.nan)[:, enough]
        low[enough] = np.nanquantile(kept, tail, axis=0)
        high[enough] = np.nanquantile(kept, 1.0 - tail, axis=0)
    return low, high


def interval_of(replicates: np.ndarray | None, level: float) -> list[float | None] | None:
    """[low, high] of one score's B replicates, as JSON-ready floats (None when undefined)."""
    if replicates is None:
        return None
    low, high = percentile_interval(np.asarray(replicates).reshape(-1, 1), level)
    return [_finite(low[0]), _finite(high[0])]


def interval_columns(frame: pd.DataFrame, replicates: ReplicateScores, table: str) -> pd.DataFrame:
    """`frame` (the by-lead or by-group table, rows in the replicates' order) with <key>_ci_low/_ci_high
    columns after each score that has replicates."""
    frame = frame.copy()
    for key in replicates.keys(table):
        if key not in frame:
            continue
        low, high = percentile_interval(replicates.values(table, key), replicates.level)
        if len(low) != len(frame):
            continue
        at = frame.columns.get_loc(key) + 1
        frame.insert(at, f"{key}_ci_low", low)
        frame.insert(at + 1, f"{key}_ci_high", high)
    return frame


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
