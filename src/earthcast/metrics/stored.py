"""Score a stored forecast netCDF (the schema of docs/forecast_files.md) without any model, streaming it in
chunks of samples. Dims may come in any order; their names are what matter. The global attribute `dataset`
picks the evaluator; `evaluator_cfg` overrides it. Files of earlier versions (no CF coordinates) read the same.

The observations are the file's `target`, or come from `observations` (earthcast.metrics.observations): a
second file in this schema, or a gridded store matched on the forecasts' valid times (forecasts made from
fresh observations, scored once the observations exist).

Only one chunk of samples is in memory at a time (the file is opened without caching), so memory does not
grow with the number of samples. Samples with NaN/inf anywhere in prediction, target or context fail the run
(`nan_policy="fail"`), are left out whole (`"exclude"`, reported as `n_samples_excluded`), or the non-finite
points alone are left out (`"mask"`, evaluator=gridded: NaN is a missing or land point); None picks "mask"
for evaluators that take masks and "fail" for the others.

Values are checked against the evaluator's physical range (VALUE_RANGE): forecasts or observations outside it,
or observations that use under 1% of it (VIL/255 scored against VIL thresholds), are in other units. With
`range_policy="warn"` (the default) the file is scored with a warning; with "fail" it is refused in one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from earthcast.config import plain
from earthcast.errors import UserError
from earthcast.metrics.base import build_evaluator
from earthcast.metrics.enso import EnsoEvaluator
from earthcast.metrics.gridded import GriddedEvaluator
from earthcast.metrics.observations import Observations, stored_targets

log = logging.getLogger("earthcast")

#: evaluator settings implied by the file's `dataset` attribute
DATASET_EVALUATORS: dict[str, dict[str, Any]] = {
    "sevir": {"name": "sevir", "frame_minutes": 5},
    "sevirlr": {"name": "sevir", "frame_minutes": 10},
    "enso": {"name": "enso"},
    "gridded": {"name": "gridded"},
}
NAN_POLICIES = ("fail", "exclude", "mask")
RANGE_POLICIES = ("warn", "fail")
#: evaluators whose scores leave non-finite points out (nan_policy="mask")
MASKING_EVALUATORS = (GriddedEvaluator,)
META_VARIABLES = ("event_type", "init_month", "target_mean_intensity", "init_time", "event_id", "seq_start",
                  "time_utc", "model")
#: per-sample strings passed to the evaluator: groups, and the sample ids of the protocol and the bootstrap
STRING_META = ("event_type", "event_id", "time_utc", "model")


@dataclass
class _Layout:
    grid: tuple[str, str]
    has_members: bool
    has_context: bool
    n_samples: int


def evaluate_stored(
    path: str | Path,
    evaluator_cfg: Any = None,
    chunk_size: int = 16,
    nan_policy: str | None = "fail",
    observations: dict | None = None,
    range_policy: str = "warn",
) -> tuple[dict[str, float | int | None], pd.DataFrame, pd.DataFrame]:
    """Score the stored forecast at `path`; returns (metrics, by-lead table, by-group table). `observations`:
    {"path", "variable", "time_dim"} of the observations to score against instead of the file's target."""
    results = score_stored_file(path, evaluator_cfg, chunk_size, nan_policy, observations, range_policy=range_policy)
    return results["scores"], results["by_lead"], results["by_group"]


def score_stored_file(
    path: str | Path,
    evaluator_cfg: Any = None,
    chunk_size: int = 16,
    nan_policy: str | None = "fail",
    observations: dict | None = None,
    bootstrap: Any = None,
    range_policy: str = "warn",
) -> dict[str, Any]:
    """Score the stored forecast at `path` (see `evaluate_stored`): the evaluator's results (scores, by_lead,
    by_group, replicates, protocol facts), `file` (its dataset, split, synthetic and model attributes) and
    `nan_policy` (the one applied)."""
    path = Path(path)
    if nan_policy is not None and nan_policy not in NAN_POLICIES:
        raise UserError(f"nan_policy is {nan_policy!r}; use {', '.join(NAN_POLICIES)} (or null)")
    if range_policy not in RANGE_POLICIES:
        raise UserError(f"range_policy is {range_policy!r}; use 'warn' or 'fail'")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not path.is_file():
        raise UserError(f"stored forecast {path} not found; check the path")
    try:
        dataset = xr.open_dataset(path, cache=False, decode_times=False, decode_timedelta=False)
    except Exception as err:  # netCDF4/h5py raise many types for unreadable files
        raise UserError(f"cannot read {path} as netCDF ({type(err).__name__}: {err}); is it a netCDF file?") from err
    with dataset:
        layout = _check_layout(dataset, path, needs_target=observations is None)
        targets = (Observations.open(observations, dataset, layout.grid, path) if observations
                   else stored_targets(dataset, layout.grid))
        evaluator = build_evaluator(_evaluator_config(dataset, path, evaluator_cfg), bootstrap=bootstrap)
        about = {key: str(dataset.attrs[key]) for key in ("dataset", "variable", "split", "synthetic", "model",
                                                          "source") if key in dataset.attrs}
        if nan_policy is None:
            nan_policy = "mask" if isinstance(evaluator, MASKING_EVALUATORS) else "fail"
        if nan_policy == "mask" and not isinstance(evaluator, MASKING_EVALUATORS):
            raise UserError(f"nan_policy=mask leaves single points out, which evaluator={type(evaluator).__name__} "
                            f"cannot; use nan_policy=exclude (whole samples) or evaluator=gridded")
        static_meta: dict[str, Any] = {}
        if isinstance(evaluator, EnsoEvaluator):
            if layout.grid != ("lat", "lon"):
                raise UserError(f"{path}: ENSO evaluation needs dims (lat, lon) with coordinates in degrees, "
                                f"found {layout.grid}")
            for name in layout.grid:
                if name not in dataset.coords:
                    raise UserError(f"{path}: dim {name!r} has no coordinate values; store {name} in degrees")
                static_meta[name] = torch.as_tensor(dataset[name].values.astype(np.float64))
        try:
            excluded, extremes = _stream(dataset, layout, targets, evaluator, static_meta, chunk_size, nan_policy,
                                         path)
        finally:
            targets.close()
    problem = _range_problem(evaluator, extremes, path)
    if problem and range_policy == "fail":
        raise UserError(f"{problem}; convert the file to those units, or score it anyway with range_policy=warn")
    if problem:
        log.warning("warning: %s; scored anyway (range_policy=fail refuses such files)", problem)
    if not evaluator.update_called:
        raise UserError(f"{path}: no samples left to score — all {layout.n_samples} contain NaN/inf values")
    results = evaluator.results()
    if nan_policy == "exclude":
        results["scores"]["n_samples_excluded"] = excluded
    results["file"] = about
    results["nan_policy"] = nan_policy
    return results


def _check_layout(dataset: xr.Dataset, path: Path, needs_target: bool = True) -> _Layout:
    if "prediction" not in dataset.variables or (needs_target and "target" not in dataset.variables):
        missing = "prediction" if "prediction" not in dataset.variables else "target"
        hint = "; a forecast from fresh observations is scored with observations=<file>" if missing == "target" else ""
        raise UserError(
            f"{path} has no variable {missing!r}; a stored forecast needs 'prediction' and 'target' with dims "
            f"(sample, [member,] lead_time, <y>, <x>){hint}"
        )
    prediction_dims = set(dataset["prediction"].dims)
    grid_dims = [dim for dim in dataset["prediction"].dims if dim not in ("sample", "member", "lead_time")]
    if not {"sample", "lead_time"} <= prediction_dims or len(grid_dims) != 2:
        raise UserError(
            f"{path}: 'prediction' has dims {dataset['prediction'].dims}; expected (sample, [member,] lead_time, "
            "<y>, <x>), e.g. (sample, lead_time, y, x) or (sample, lead_time, lat, lon)"
        )
    grid = tuple(grid_dims)
    if grid == ("lon", "lat") or grid == ("x", "y"):
        grid = grid[::-1]
    target_dims = {"sample", "lead_time", *grid}
    if "target" in dataset.variables and set(dataset["target"].dims) != target_dims:
        raise UserError(
            f"{path}: 'prediction' has dims {dataset['prediction'].dims} but 'target' has "
            f"{dataset['target'].dims}; prediction must have the target's dims, optionally plus 'member'"
        )
    if prediction_dims not in (target_dims, target_dims | {"member"}):
        raise UserError(f"{path}: 'prediction' has dims {dataset['prediction'].dims}; only 'member' may come "
                        f"beside (sample, lead_time, {grid[0]}, {grid[1]})")
    has_context = "context" in dataset.variables
    if has_context and set(dataset["context"].dims) != {"sample", "context_time", *grid}:
        raise UserError(
            f"{path}: 'context' has dims {dataset['context'].dims}; expected (sample, context_time, {grid[0]}, "
            f"{grid[1]}) or drop the variable"
        )
    for name in META_VARIABLES:
        if name in dataset.variables and dataset[name].dims != ("sample",):
            raise UserError(f"{path}: {name!r} has dims {dataset[name].dims}; expected (sample,)")
    n_samples = dataset.sizes["sample"]
    if n_samples == 0:
        raise UserError(f"{path} has no samples (dim 'sample' is empty)")
    return _Layout(grid, "member" in prediction_dims, has_context, n_samples)


def _evaluator_config(dataset: xr.Dataset, path: Path, evaluator_cfg: Any) -> dict[str, Any]:
    override = plain(evaluator_cfg)
    name = dataset.attrs.get("dataset")
    if name is None:
        if "name" in override:
            return override
        raise UserError(
            f"{path} has no global attribute 'dataset'; set it ({', '.join(DATASET_EVALUATORS)}) "
            "or pass an evaluator config"
        )
    name = str(name).strip().lower()
    if name not in DATASET_EVALUATORS and "name" not in override:
        raise UserError(
            f"{path}: dataset {name!r} has no default evaluator (known: {', '.join(DATASET_EVALUATORS)}); "
            "pass an evaluator config with a 'name'"
        )
    implied = dict(DATASET_EVALUATORS.get(name, {}))
    minutes = frame_minutes(dataset)
    if minutes is not None and implied.get("name") == "gridded":
        implied["frame_minutes"] = minutes
    return {**implied, **override}


def frame_minutes(dataset: xr.Dataset) -> float | None:
    """Minutes between leads, from a CF `lead_time` coordinate in minutes (None without one)."""
    if "lead_time" not in dataset.variables or dataset.sizes["lead_time"] < 1:
        return None
    lead = dataset["lead_time"]
    if str(lead.attrs.get("units", "")).split(" ")[0] != "minutes":
        return None
    return float(lead.values[0])


def _stream(
    dataset: xr.Dataset,
    layout: _Layout,
    targets: Any,
    evaluator: Any,
    static_meta: dict[str, Any],
    chunk_size: int,
    nan_policy: str,
    path: Path,
) -> tuple[int, dict[str, list[float]]]:
    """Feed the evaluator chunk by chunk; return the number of samples excluded for NaN/inf, and the finite
    extremes of prediction and target."""
    grid = list(layout.grid)
    member = ["member"] if layout.has_members else []
    variables = {"prediction": dataset["prediction"].transpose("sample", *member, "lead_time", *grid)}
    if layout.has_context:
        variables["context"] = dataset["context"].transpose("sample", "context_time", *grid)
    bad_values = dict.fromkeys([*variables, "target"], 0)
    extremes = {name: [np.inf, -np.inf] for name in ("prediction", "target")}
    bad_samples: list[int] = []
    for start in range(0, layout.n_samples, chunk_size):
        window = slice(start, min(start + chunk_size, layout.n_samples))
        arrays = {name: np.asarray(var.isel(sample=window).values, dtype=np.float32)
                  for name, var in variables.items()}
        arrays["target"] = targets.chunk(window)
        finite = np.ones(window.stop - window.start, dtype=bool)
        for name in extremes:
            finite_values = arrays[name][np.isfinite(arrays[name])]
            if finite_values.size:
                extremes[name] = [min(extremes[name][0], float(finite_values.min())),
                                  max(extremes[name][1], float(finite_values.max()))]
        if nan_policy != "mask":  # with "mask" the evaluator leaves non-finite points out itself
            for name, array in arrays.items():
                bad = ~np.isfinite(array)
                bad_values[name] += int(bad.sum())
                finite &= ~bad.reshape(bad.shape[0], -1).any(axis=1)
        bad_samples.extend((np.flatnonzero(~finite) + start).tolist())
        if nan_policy == "fail" and bad_samples:
            continue  # keep counting so the error reports the whole file
        keep = np.flatnonzero(finite)
        if keep.size == 0:
            continue
        meta = {**static_meta, **_chunk_meta(dataset, window, keep, path)}
        tensors = {name: torch.from_numpy(array[keep]) for name, array in arrays.items()}
        evaluator.update(tensors["prediction"], tensors["target"], context=tensors.get("context"), meta=meta)
    if bad_samples and nan_policy == "fail":
        counts = ", ".join(f"{name}: {count}" for name, count in bad_values.items() if count)
        raise UserError(
            f"{path}: {sum(bad_values.values())} NaN/inf values in {len(bad_samples)} of {layout.n_samples} "
            f"samples ({counts}; first at sample {bad_samples[0]}); fix the file or use nan_policy='exclude'"
        )
    return len(bad_samples), extremes


def _range_problem(evaluator: Any, extremes: dict[str, list[float]], path: Path) -> str | None:
    """Why the stored values look like other units than the evaluator's (one line), or None."""
    if evaluator.VALUE_RANGE is None:
        return None
    low, high, units = evaluator.VALUE_RANGE
    outside = [f"{name} spans {lo:.4g}..{hi:.4g}" for name, (lo, hi) in extremes.items()
               if np.isfinite(lo) and (lo < low or hi > high)]
    if outside:
        return (f"{path}: {' and '.join(outside)}, outside the {units} that evaluator={type(evaluator).__name__} "
                f"scores; the file holds other units")
    lo, hi = extremes["target"]
    if np.isfinite(lo) and max(abs(lo), abs(hi)) < 0.01 * (high - low):
        return (f"{path}: the target peaks at {max(abs(lo), abs(hi)):.4g}, under 1% of the {units} that "
                f"evaluator={type(evaluator).__name__} scores; it looks rescaled (e.g. VIL/255 instead of 0–255)")
    return None


def _chunk_meta(dataset: xr.Dataset, window: slice, keep: np.ndarray, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name in STRING_META:
        if name in dataset.variables and dataset[name].dims == ("sample",):
            values = dataset[name].isel(sample=window).values[keep]
            meta[name] = [value.decode() if isinstance(value, bytes) else value for value in values.tolist()]
    if "seq_start" in dataset.variables:
        meta["seq_start"] = torch.as_tensor(np.asarray(dataset["seq_start"].isel(sample=window).values[keep],
                                                       dtype=np.int64))
    if "init_month" in dataset.variables:
        months = np.asarray(dataset["init_month"].isel(sample=window).values[keep], dtype=np.float64)
        if not np.all(np.isin(months, np.arange(1, 13))):
            raise UserError(f"{path}: 'init_month' must hold calendar months 1–12, found {sorted(set(months))}")
        meta["init_month"] = torch.as_tensor(months.astype(np.int64))
    if "target_mean_intensity" in dataset.variables:
        values = dataset["target_mean_intensity"].isel(sample=window).values[keep]
        meta["target_mean_intensity"] = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if "init_time" in dataset.variables:
        times = xr.decode_cf(dataset[["init_time"]].isel(sample=window))["init_time"].values[keep]
        meta["init_time"] = [pd.Timestamp(t).isoformat() if not pd.isna(t) else "" for t in times]
    return meta
