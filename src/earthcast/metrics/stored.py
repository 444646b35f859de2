"""Score a stored forecast netCDF (the schema of docs/forecast_files.md) without any model, streaming it in
chunks of samples. Dims may come in any order; their names are what matter. The global attribute `dataset`
picks the evaluator; `evaluator_cfg` overrides it.

Only one chunk of samples is in memory at a time (the file is opened without caching), so memory does not
grow with the number of samples. Samples with NaN/inf anywhere in prediction, target or context fail the run
(`nan_policy="fail"`, the default) or are left out whole (`"exclude"`, reported as `n_samples_excluded`).
"""

from __future__ import annotations

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

#: evaluator settings implied by the file's `dataset` attribute
DATASET_EVALUATORS: dict[str, dict[str, Any]] = {
    "sevir": {"name": "sevir", "frame_minutes": 5},
    "sevirlr": {"name": "sevir", "frame_minutes": 10},
    "enso": {"name": "enso"},
}
GRID_DIMS = (("y", "x"), ("lat", "lon"))
NAN_POLICIES = ("fail", "exclude")
META_VARIABLES = ("event_type", "init_month", "target_mean_intensity")


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
    nan_policy: str = "fail",
) -> tuple[dict[str, float | int | None], pd.DataFrame, pd.DataFrame]:
    """Score the stored forecast at `path`; returns (metrics, by-lead table, by-group table)."""
    path = Path(path)
    if nan_policy not in NAN_POLICIES:
        raise UserError(f"nan_policy is {nan_policy!r}; use 'fail' or 'exclude'")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not path.is_file():
        raise UserError(f"stored forecast {path} not found; check the path")
    try:
        dataset = xr.open_dataset(path, cache=False, decode_times=False)
    except Exception as err:  # netCDF4/h5py raise many types for unreadable files
        raise UserError(f"cannot read {path} as netCDF ({type(err).__name__}: {err}); is it a netCDF file?") from err
    with dataset:
        layout = _check_layout(dataset, path)
        evaluator = build_evaluator(_evaluator_config(dataset, path, evaluator_cfg))
        static_meta: dict[str, Any] = {}
        if isinstance(evaluator, EnsoEvaluator):
            if layout.grid != ("lat", "lon"):
                raise UserError(f"{path}: ENSO evaluation needs dims (lat, lon) with coordinates in degrees, "
                                f"found {layout.grid}")
            for name in layout.grid:
                if name not in dataset.coords:
                    raise UserError(f"{path}: dim {name!r} has no coordinate values; store {name} in degrees")
                static_meta[name] = torch.as_tensor(dataset[name].values.astype(np.float64))
        excluded = _stream(dataset, layout, evaluator, static_meta, chunk_size, nan_policy, path)
    if not evaluator.update_called:
        raise UserError(f"{path}: no samples left to score — all {layout.n_samples} contain NaN/inf values")
    metrics = dict(evaluator.compute())
    if nan_policy == "exclude":
        metrics["n_samples_excluded"] = excluded
    return metrics, evaluator.compute_by_lead(), evaluator.compute_by_group()


def _check_layout(dataset: xr.Dataset, path: Path) -> _Layout:
    for name in ("prediction", "target"):
        if name not in dataset.variables:
            raise UserError(
                f"{path} has no variable {name!r}; a stored forecast needs 'prediction' and 'target' with dims "
                "(sample, [member,] lead_time, y, x) or (sample, [member,] lead_time, lat, lon)"
            )
    target_dims = set(dataset["target"].dims)
    grid = next((dims for dims in GRID_DIMS if target_dims == {"sample", "lead_time", *dims}), None)
    if grid is None:
        raise UserError(
            f"{path}: 'target' has dims {dataset['target'].dims}; expected (sample, lead_time, y, x) "
            "or (sample, lead_time, lat, lon)"
        )
    prediction_dims = set(dataset["prediction"].dims)
    if prediction_dims not in (target_dims, target_dims | {"member"}):
        raise UserError(
            f"{path}: 'prediction' has dims {dataset['prediction'].dims} but 'target' has "
            f"{dataset['target'].dims}; prediction must have the target's dims, optionally plus 'member'"
        )
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
    return {**DATASET_EVALUATORS.get(name, {}), **override}


def _stream(
    dataset: xr.Dataset,
    layout: _Layout,
    evaluator: Any,
    static_meta: dict[str, Any],
    chunk_size: int,
    nan_policy: str,
    path: Path,
) -> int:
    """Feed the evaluator chunk by chunk; return the number of samples excluded for NaN/inf."""
    grid = list(layout.grid)
    member = ["member"] if layout.has_members else []
    variables = {
        "prediction": dataset["prediction"].transpose("sample", *member, "lead_time", *grid),
        "target": dataset["target"].transpose("sample", "lead_time", *grid),
    }
    if layout.has_context:
        variables["context"] = dataset["context"].transpose("sample", "context_time", *grid)
    bad_values = dict.fromkeys(variables, 0)
    bad_samples: list[int] = []
    for start in range(0, layout.n_samples, chunk_size):
        window = slice(start, min(start + chunk_size, layout.n_samples))
        arrays = {name: np.asarray(var.isel(sample=window).values, dtype=np.float32)
                  for name, var in variables.items()}
        finite = np.ones(window.stop - window.start, dtype=bool)
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
    return len(bad_samples)


def _chunk_meta(dataset: xr.Dataset, window: slice, keep: np.ndarray, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if "event_type" in dataset.variables:
        values = dataset["event_type"].isel(sample=window).values[keep]
        meta["event_type"] = [value.decode() if isinstance(value, bytes) else value for value in values.tolist()]
    if "init_month" in dataset.variables:
        months = np.asarray(dataset["init_month"].isel(sample=window).values[keep], dtype=np.float64)
        if not np.all(np.isin(months, np.arange(1, 13))):
            raise UserError(f"{path}: 'init_month' must hold calendar months 1–12, found {sorted(set(months))}")
        meta["init_month"] = torch.as_tensor(months.astype(np.int64))
    if "target_mean_intensity" in dataset.variables:
        values = dataset["target_mean_intensity"].isel(sample=window).values[keep]
        meta["target_mean_intensity"] = torch.as_tensor(np.asarray(values, dtype=np.float64))
    return meta
