"""Where a stored forecast's observations come from when it is scored (earthcast.metrics.stored).

    stored_targets(dataset, grid)          the file's own `target`
    Observations.open(spec, dataset, ...)  `earthcast eval predictions=<file> observations=<file>`: a second
                                           file in the stored-forecast schema (its `target`, sample by
                                           sample), or a gridded store (netCDF/Zarr file, directory or glob,
                                           as dataset=gridded reads them) whose frames at the forecasts'
                                           `valid_time` are the observations
Each gives `chunk(window)`: float32 samples × lead_time × y × x for a slice of samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.errors import UserError


class _FileTargets:
    def __init__(self, variable: xr.DataArray, owner: xr.Dataset | None = None):
        self.variable, self.owner = variable, owner

    def chunk(self, window: slice) -> np.ndarray:
        return np.asarray(self.variable.isel(sample=window).values, dtype=np.float32)

    def close(self) -> None:
        if self.owner is not None:
            self.owner.close()


def stored_targets(dataset: xr.Dataset, grid: tuple[str, str]) -> _FileTargets:
    return _FileTargets(dataset["target"].transpose("sample", "lead_time", *grid))


class _StoreTargets:
    """Frames of a gridded store at each sample's valid times."""

    def __init__(self, store, indices: np.ndarray):
        self.store, self.indices = store, indices

    def chunk(self, window: slice) -> np.ndarray:
        rows = []
        for frames in self.indices[window]:
            if np.all(np.diff(frames) == 1):
                rows.append(self.store.frames(int(frames[0]), int(frames[-1]) + 1))
            else:
                rows.append(np.stack([self.store.frames(int(i), int(i) + 1)[0] for i in frames]))
        return np.stack(rows)

    def close(self) -> None:
        self.store.close()


class Observations:
    @staticmethod
    def open(spec: dict[str, Any], predictions: xr.Dataset, grid: tuple[str, str], path: Path):
        source = str(spec["path"])
        aligned = _stored_schema(source)
        if aligned is not None:
            return _aligned(aligned, predictions, grid, path, source)
        return _from_store(spec, predictions, grid, path, source)


def _stored_schema(source: str) -> xr.Dataset | None:
    """The observations file opened, when it is one file in the stored-forecast schema (has `target`)."""
    candidate = Path(source).expanduser()
    if not candidate.is_file():
        return None
    try:
        dataset = xr.open_dataset(candidate, cache=False, decode_times=False, decode_timedelta=False)
    except Exception:  # noqa: BLE001 - not netCDF: left to the gridded reader, which reports it
        return None
    if "target" in dataset.variables and "sample" in dataset["target"].dims:
        return dataset
    dataset.close()
    return None


def _aligned(observed: xr.Dataset, predictions: xr.Dataset, grid, path: Path, source: str) -> _FileTargets:
    expected = {"sample": predictions.sizes["sample"], "lead_time": predictions.sizes["lead_time"],
                **{dim: predictions.sizes[dim] for dim in grid}}
    found = {dim: observed.sizes.get(dim) for dim in expected}
    if found != expected or set(observed["target"].dims) != set(expected):
        observed.close()
        raise UserError(f"observations={source}: 'target' has {dict(observed['target'].sizes)} but {path} has "
                        f"{expected}; give the observations of the same samples, leads and grid")
    return _FileTargets(observed["target"].transpose("sample", "lead_time", *grid), owner=observed)


def _from_store(spec: dict[str, Any], predictions: xr.Dataset, grid, path: Path, source: str) -> _StoreTargets:
    from earthcast.data.gridded.store import GriddedStore

    variable = spec.get("variable") or predictions.attrs.get("variable")
    if not variable:
        raise UserError(f"{path} does not name its variable (global attribute 'variable'); pass "
                        f"observations_variable=<name in {source}>")
    if "valid_time" not in predictions.variables:
        raise UserError(f"{path} has no valid_time, so its forecasts cannot be matched to the observations in "
                        f"{source} by time; write it with earthcast predict (inputs with times), or give "
                        f"observations in the stored-forecast schema (a 'target' per sample)")
    store = GriddedStore(source, str(variable), str(spec.get("time_dim") or "time"), list(grid),
                         variable_key="observations_variable")
    expected = tuple(predictions.sizes[dim] for dim in grid)
    if store.shape != expected:
        raise UserError(f"observations={source}: {variable} is {store.shape[0]}×{store.shape[1]} on {list(grid)} but "
                        f"the forecasts in {path} are {expected[0]}×{expected[1]}; give observations on the "
                        f"forecasts' grid")
    valid = xr.decode_cf(predictions[["valid_time"]])["valid_time"].transpose("sample", "lead_time").values
    indices = store.times.get_indexer(pd.DatetimeIndex(valid.ravel())).reshape(valid.shape)
    if (indices < 0).any():
        missing = pd.Timestamp(valid.ravel()[np.flatnonzero(indices.ravel() < 0)[0]])
        raise UserError(f"observations={source} has no {variable} at {missing} (valid time of a forecast in "
                        f"{path}; the store covers {store.times[0]} … {store.times[-1]}); score once the "
                        f"observations exist")
    return _StoreTargets(store, indices)
