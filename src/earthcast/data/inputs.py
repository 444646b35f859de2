"""Forecasts from fresh observations (`earthcast predict ckpt_path=... inputs=<file>`): the last in_len frames of
a file, with no targets, as a datamodule whose predict loader the trained module forecasts from.

An inputs file is either
    a stored forecast file (docs/forecast_files.md) with `context` (sample, context_time, <y>, <x>): every
        sample's last in_len context frames, its init_time where the file has one; or
    a gridded store (netCDF/Zarr file, directory or glob, as dataset=gridded reads them): one forecast from
        the store's last in_len frames of `variable` on (time_dim, *dims), which must be evenly spaced, at
        the training data's frame interval where the checkpoint knows it.
Values are in the variable's physical units and are normalised with the checkpoint's statistics (the training
datamodule's `units`); NaN points enter the model as the training mean, as in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset

from earthcast.data.base import ForecastDataModule, ForecastLayout
from earthcast.data.gridded.store import GriddedStore, duration
from earthcast.errors import UserError


class _Contexts(Dataset):
    def __init__(self, inputs: np.ndarray, init_times: list[str] | None):
        self.inputs, self.init_times = inputs, init_times

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"inputs": torch.from_numpy(self.inputs[index]).unsqueeze(-1)}
        if self.init_times is not None:
            item["init_time"] = self.init_times[index]
        return item


class InputsDataModule(L.LightningDataModule):
    """The inputs of `inputs=<file>` for a module trained on `trained` (its units and grid)."""

    def __init__(self, path: str, trained: ForecastDataModule, cfg_dataset: dict, variable: str | None,
                 time_dim: str | None, dims: list[str] | None, batch_size: int):
        super().__init__()
        self.trained, self.batch_size = trained, batch_size
        in_len, height, width = int(cfg_dataset["in_len"]), cfg_dataset["height"], cfg_dataset["width"]
        self.path = path
        stored = _open_stored(path)
        if stored is not None:
            with stored:
                frames, init_times, self.layout = _from_stored(stored, path, in_len)
        else:
            frames, init_times, self.layout = _from_store(path, cfg_dataset, variable, time_dim, dims, in_len,
                                                          getattr(trained, "trained_step", None))
        if (height, width) != tuple(frames.shape[-2:]):
            raise UserError(f"inputs={path}: the grid is {frames.shape[-2]}×{frames.shape[-1]} on "
                            f"{list(self.layout.grid)}, but the checkpoint's model was trained on {height}×{width}; "
                            f"give inputs on the training grid")
        normalised = trained.units.to_model(frames.astype(np.float64))
        normalised = np.where(np.isfinite(normalised), normalised, 0.0).astype(np.float32)
        self.contexts = _Contexts(normalised, init_times)

    @property
    def units(self):
        return self.trained.units

    def forecast_layout(self) -> ForecastLayout:
        return self.layout

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.contexts, batch_size=self.batch_size, shuffle=False)


def _open_stored(path: str) -> xr.Dataset | None:
    candidate = Path(path).expanduser()
    if not candidate.is_file():
        return None
    try:
        dataset = xr.open_dataset(candidate, cache=False, decode_timedelta=False)
    except Exception:  # noqa: BLE001 - not a netCDF file xarray reads alone: the gridded reader reports why
        return None
    if "context" in dataset.variables and "sample" in dataset["context"].dims:
        return dataset
    dataset.close()
    return None


def _from_stored(dataset: xr.Dataset, path: str, in_len: int):
    context = dataset["context"]
    grid = [dim for dim in context.dims if dim not in ("sample", "context_time")]
    if "context_time" not in context.dims or len(grid) != 2:
        raise UserError(f"inputs={path}: 'context' has dims {context.dims}; expected (sample, context_time, <y>, <x>)")
    if context.sizes["context_time"] < in_len:
        raise UserError(f"inputs={path} holds {context.sizes['context_time']} context frames per sample, shorter "
                        f"than the checkpoint's in_len={in_len}; give at least {in_len}")
    frames = context.transpose("sample", "context_time", *grid).values[:, -in_len:]
    init_times = None
    if "init_time" in dataset.variables and np.issubdtype(dataset["init_time"].dtype, np.datetime64):
        init_times = [pd.Timestamp(t).isoformat() for t in dataset["init_time"].values]
    frame = None
    if "context_time" in dataset.variables and dataset["context_time"].attrs.get("units") == "minutes" and in_len > 1:
        frame = pd.Timedelta(minutes=float(np.diff(dataset["context_time"].values[-2:])[0]))
    coords = {dim: (dataset[dim].values, dict(dataset[dim].attrs)) for dim in grid if dim in dataset.variables}
    variable = {k: v for k, v in context.attrs.items() if k in ("units", "standard_name")}
    long_name = str(context.attrs.get("long_name", "")).removesuffix(" (input)")
    if long_name:
        variable["long_name"] = long_name
    if dataset.attrs.get("variable"):
        variable["name"] = dataset.attrs["variable"]
    return frames, init_times, ForecastLayout(grid=tuple(grid), coords=coords, frame=frame, variable=variable,
                                              attrs={"inputs": path})


def _from_store(path: str, cfg_dataset: dict, variable: str | None, time_dim: str | None, dims: list[str] | None,
                in_len: int, trained_step: pd.Timedelta | None):
    gridded = cfg_dataset.get("name") == "gridded"
    variable = variable or (cfg_dataset.get("variable") if gridded else None)
    dims = list(dims or (cfg_dataset.get("dims") if gridded else []) or [])
    if not variable or len(dims) != 2:
        raise UserError(f"inputs={path} is not a stored forecast file (no 'context'); read it as a gridded store "
                        f"with inputs_variable=<name> inputs_dims=[<y>,<x>]")
    time_dim = time_dim or (cfg_dataset.get("time_dim") if gridded else None) or "time"
    store = GriddedStore(path, str(variable), time_dim, dims, cfg_dataset.get("select") if gridded else None,
                         variable_key="inputs_variable")
    times = store.times
    if len(times) < in_len:
        raise UserError(f"inputs={path} holds {len(times)} frames of {variable}, shorter than the checkpoint's "
                        f"in_len={in_len}; give at least {in_len}")
    last = times[-in_len:]
    steps = np.unique(np.diff(last.values))
    if len(steps) > 1:
        raise UserError(f"inputs={path}: the last {in_len} times of {variable} are not evenly spaced (gap in "
                        f"{last[0]} … {last[-1]}); give {in_len} consecutive frames")
    step = pd.Timedelta(steps[0]) if len(steps) else trained_step
    if trained_step is not None and step != trained_step:
        raise UserError(f"inputs={path}: frames every {duration(step)}, but the checkpoint was trained on frames "
                        f"every {duration(trained_step)}; give inputs at the training interval")
    frames = store.frames(len(times) - in_len, len(times))[None]
    store.close()
    names = {k: v for k, v in store.attrs.items()}
    return frames, [last[-1].isoformat()], ForecastLayout(
        grid=store.dims, coords=dict(store.coords), frame=step, variable={"name": str(variable), **names},
        attrs={"inputs": path})
