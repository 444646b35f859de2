"""A gridded store as earthcast reads it: one variable on a (time, y, x) grid from netCDF or Zarr, opened
lazily with xarray, frames read in chunks through a bounded cache.

`path` is one file (.nc, .nc4, .h5), a Zarr store (a directory ending in .zarr, or holding zarr.json or
.zmetadata), a directory of netCDF files, or a glob (`era5/t2m_*.nc`). Several files are joined along time in
order of their first time; they must not overlap. Nothing is loaded when the store opens: each file's time
coordinate and the variable's metadata are read, the frames only when asked for. A read fetches the aligned
block of `chunk_frames` frames around it and keeps the last `cache_chunks` blocks (least recently used goes
first), so consecutive windows, which overlap, read each frame once; memory is bounded by
cache_chunks × chunk_frames × height × width × 4 bytes per process.

File handles are opened inside whichever process reads and never travel to another (DataLoader workers open
their own, as SEVIR's HDF5 reader does).
"""

from __future__ import annotations

import glob as globbing
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.errors import UserError

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5", ".cdf")


def is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (path.is_dir() and any((path / name).exists()
                                                            for name in ("zarr.json", ".zmetadata", ".zgroup")))


def store_sources(path: str | os.PathLike) -> list[Path]:
    """The files (or Zarr stores) a `dataset.path` names."""
    text = str(path)
    if any(char in text for char in "*?["):
        sources = [Path(p) for p in sorted(globbing.glob(os.path.expanduser(text)))]
        if not sources:
            raise UserError(f"dataset.path={text} matches no files; check the pattern")
        return sources
    root = Path(text).expanduser()
    if not root.exists():
        raise UserError(f"dataset.path={root} does not exist; give a netCDF file, a Zarr store, a directory of "
                        f"netCDF files or a glob")
    if root.is_file() or is_zarr(root):
        return [root]
    sources = sorted(p for p in root.iterdir() if p.suffix in NETCDF_SUFFIXES or is_zarr(p))
    if not sources:
        raise UserError(f"dataset.path={root} is a directory without netCDF files (*.nc) or Zarr stores; point "
                        f"it at the data")
    return sources


def open_source(source: Path) -> xr.Dataset:
    """One file or Zarr store, lazily (cache=False: a read never keeps the whole variable in memory)."""
    try:
        if is_zarr(source):
            return xr.open_dataset(source, engine="zarr", cache=False, chunks=None)
        return xr.open_dataset(source, cache=False, chunks=None)
    except ImportError as err:
        raise UserError(f"{source}: reading it needs a package that is not installed ({err}); "
                        f"pip install 'earthcast[gridded]'") from None
    except Exception as err:  # noqa: BLE001 - netCDF4/h5py/zarr raise many types for unreadable stores
        raise UserError(f"cannot open {source} with xarray ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        f"is it netCDF or Zarr?") from None


def as_datetimes(index: Any, source: Path, time_dim: str) -> pd.DatetimeIndex:
    """A decoded time coordinate as datetimes (cftime calendars that map onto real dates are converted)."""
    if isinstance(index, pd.DatetimeIndex):
        return index
    to_datetime = getattr(index, "to_datetimeindex", None)
    if to_datetime is not None:
        try:
            return to_datetime(time_unit="ns")
        except (TypeError, ValueError) as err:
            raise UserError(f"{source}: the {time_dim!r} coordinate uses a calendar without real dates "
                            f"({err}); convert it to the standard calendar") from None
    raise UserError(f"{source}: {time_dim!r} holds no dates (units {getattr(index, 'dtype', '?')}); it needs CF "
                    f"units like 'hours since 1970-01-01'")


@dataclass
class Source:
    path: Path
    times: pd.DatetimeIndex


class GriddedStore:
    """`variable` on (time_dim, *dims) from the sources of `path`, restricted to `select` (dim → [first, last]
    coordinate values, inclusive)."""

    def __init__(self, path: str | os.PathLike, variable: str, time_dim: str, dims: list[str],
                 select: dict | None = None, chunk_frames: int = 16, cache_chunks: int = 8,
                 variable_key: str = "dataset.variable"):
        if len(dims) != 2:
            raise UserError(f"dataset.dims={list(dims)} must name the two spatial dims (y, x), e.g. [lat, lon]")
        if chunk_frames < 1 or cache_chunks < 1:
            raise UserError("dataset.chunk_frames and dataset.cache_chunks must be ≥ 1")
        self.path, self.variable, self.time_dim, self.dims = str(path), variable, time_dim, tuple(dims)
        self.chunk_frames, self.cache_chunks = int(chunk_frames), int(cache_chunks)
        self.variable_key = variable_key  # the setting that names the variable, for error messages
        self.sources: list[Source] = []
        for source in store_sources(path):
            with open_source(source) as ds:
                if not self.sources:
                    self._read_layout(ds, source, select or {})
                self._check_variable(ds, source)
                self.sources.append(Source(source, as_datetimes(ds.indexes[time_dim], source, time_dim)))
        self.sources.sort(key=lambda s: s.times[0] if len(s.times) else pd.Timestamp.max)
        self.times = pd.DatetimeIndex(np.concatenate([s.times.values for s in self.sources]))
        self._starts = np.cumsum([0] + [len(s.times) for s in self.sources])
        if len(self.times) == 0:
            raise UserError(f"dataset.path={self.path}: the time axis {time_dim!r} is empty")
        order = np.diff(self.times.values.astype("datetime64[ns]").astype(np.int64))
        if (order <= 0).any():
            at = int(np.flatnonzero(order <= 0)[0])
            raise UserError(f"dataset.path={self.path}: times are not strictly increasing at {self.times[at]} → "
                            f"{self.times[at + 1]} (overlapping files or duplicates); remove the overlap")
        self._handles: dict[int, xr.Dataset] = {}
        self._handles_pid: int | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # -- layout -------------------------------------------------------------------------------------------
    def _read_layout(self, ds: xr.Dataset, source: Path, select: dict) -> None:
        if self.variable not in ds.data_vars:
            self._check_variable(ds, source)
        self.attrs = dict(ds[self.variable].attrs)
        self.index: dict[str, slice] = {}
        self.coords: dict[str, tuple[np.ndarray, dict]] = {}
        for dim in self.dims:
            size = ds.sizes[dim] if dim in ds.sizes else 0
            bounds = select.get(dim)
            index = slice(0, size)
            if bounds is not None:
                if dim not in ds.coords or len(bounds) != 2:
                    raise UserError(f"dataset.select.{dim}={bounds!r}: give [first, last] coordinate values of a "
                                    f"dim that has coordinates")
                values = ds[dim].values
                low, high = sorted(float(b) for b in bounds)
                inside = np.flatnonzero((values >= low) & (values <= high))
                if inside.size == 0:
                    raise UserError(f"dataset.select.{dim}={list(bounds)} selects nothing (the coordinate runs "
                                    f"{values.min():g}…{values.max():g})")
                index = slice(int(inside[0]), int(inside[-1]) + 1)
            self.index[dim] = index
            if dim in ds.coords:
                self.coords[dim] = (np.asarray(ds[dim].values[index]), dict(ds[dim].attrs))
        self.static_names = [name for name, var in ds.data_vars.items() if set(var.dims) == set(self.dims)]

    def _check_variable(self, ds: xr.Dataset, source: Path) -> None:
        if self.variable not in ds.data_vars:
            have = ", ".join(sorted(str(v) for v in ds.data_vars)) or "none"
            raise UserError(f"{source} has no variable {self.variable!r} (it has: {have}); set {self.variable_key}")
        dims = ds[self.variable].dims
        if set(dims) != {self.time_dim, *self.dims}:
            raise UserError(f"{source}: {self.variable!r} has dims {dims}; dataset.time_dim={self.time_dim!r} and "
                            f"dataset.dims={list(self.dims)} must name them all (select a level first if it "
                            f"has more)")
        if self.time_dim not in ds.indexes:
            raise UserError(f"{source}: dim {self.time_dim!r} has no coordinate values; store the times")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(s.stop - s.start for s in self.index.values())

    # -- reading ------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_handles_pid"], state["_cache"] = {}, None, OrderedDict()
        return state

    def _dataset(self, which: int) -> xr.Dataset:
        pid = os.getpid()
        if self._handles_pid != pid:
            self._handles, self._handles_pid, self._cache = {}, pid, OrderedDict()
        if which not in self._handles:
            self._handles[which] = open_source(self.sources[which].path)
        return self._handles[which]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) from the sources, float32 T × H × W, bypassing the cache."""
        parts = []
        for which in range(len(self.sources)):
            first, last = self._starts[which], self._starts[which + 1]
            if last <= start or first >= stop:
                continue
            var = self._dataset(which)[self.variable]
            window = {self.time_dim: slice(max(start, first) - first, min(stop, last) - first), **self.index}
            parts.append(np.asarray(var.isel(window).transpose(self.time_dim, *self.dims).values, dtype=np.float32))
        return np.concatenate(parts)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop − start) × H × W, through the chunk cache."""
        if not 0 <= start < stop <= len(self.times):
            raise IndexError((start, stop))
        out = np.empty((stop - start, *self.shape), dtype=np.float32)
        first_chunk, last_chunk = start // self.chunk_frames, (stop - 1) // self.chunk_frames
        for chunk in range(first_chunk, last_chunk + 1):
            block = self._chunk(chunk)
            lo = chunk * self.chunk_frames
            a, b = max(start, lo), min(stop, lo + len(block))
            out[a - start:b - start] = block[a - lo:b - lo]
        return out

    def _chunk(self, chunk: int) -> np.ndarray:
        self._dataset(0)  # resets the cache in a new process
        if chunk in self._cache:
            self._cache.move_to_end(chunk)
            return self._cache[chunk]
        lo = chunk * self.chunk_frames
        block = self.read(lo, min(lo + self.chunk_frames, len(self.times)))
        self._cache[chunk] = block
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return block

    @property
    def cached_frames(self) -> int:
        return sum(len(block) for block in self._cache.values())

    def static(self, name: str) -> np.ndarray:
        """A (y, x) variable of the first source (e.g. a land–sea mask), on the selected grid."""
        with open_source(self.sources[0].path) as ds:
            if name not in ds.data_vars:
                raise UserError(f"{self.sources[0].path} has no variable {name!r} for dataset.mask.variable "
                                f"(2-D variables there: {', '.join(self.static_names) or 'none'})")
            var = ds[name]
            if set(var.dims) != set(self.dims):
                raise UserError(f"{self.sources[0].path}: {name!r} has dims {var.dims}; dataset.mask.variable "
                                f"must be on {list(self.dims)} alone")
            return np.asarray(var.isel(self.index).transpose(*self.dims).values, dtype=np.float64)

    def close(self) -> None:
        if self._handles_pid == os.getpid():
            for ds in self._handles.values():
                ds.close()
        self._handles, self._handles_pid, self._cache = {}, None, OrderedDict()


def time_step(times: pd.DatetimeIndex, configured: str | None) -> pd.Timedelta:
    """The store's frame interval: `configured` (e.g. '6h') or else the most common difference of `times`."""
    if configured:
        try:
            step = pd.Timedelta(str(configured))
        except ValueError:
            raise UserError(f"dataset.time_step={configured!r} is not a duration like '6h' or '1D'") from None
        if step <= pd.Timedelta(0):
            raise UserError(f"dataset.time_step={configured!r} must be positive")
        return step
    if len(times) < 2:
        raise UserError("the store has a single time; it needs in_len + out_len consecutive frames")
    differences = pd.Series(np.diff(times.values))
    return pd.Timedelta(differences.mode().iloc[0])


def gaps(times: pd.DatetimeIndex, step: pd.Timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """(before, after) for each pair of consecutive times further apart than `step` (or closer)."""
    differences = np.diff(times.values)
    where = np.flatnonzero(differences != step.to_timedelta64())
    return [(times[i], times[i + 1]) for i in where]


def duration(step: pd.Timedelta) -> str:
    """'6h', '1D', '10min': a frame interval as pandas writes frequencies."""
    return pd.tseries.frequencies.to_offset(step).freqstr
