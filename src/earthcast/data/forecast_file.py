"""Forecast files (predictions.nc): written batch by batch in the stored-forecast schema of
docs/forecast_files.md (CF-1.10, `Conventions: "CF-1.10 earthcast-forecast-1"`), which `earthcast eval
predictions=<file>` reads back (earthcast.metrics.stored), as do xarray, cf_xarray and CF tools.

The dataset describes its grid, frame interval and variable (earthcast.data.base.ForecastLayout); the writer
adds the CF coordinates: `lead_time` (a duration, standard_name forecast_period), `init_time(sample)` and
`valid_time(sample, lead_time)` where the samples have times, `member` (standard_name realization) for
ensembles. A forecast from fresh observations has no `target`.

A file is written under a temporary name and renamed when complete (earthcast.io), so a crashed run never
leaves a file that looks finished. Under DDP every rank writes its own part and `merge_rank_parts` joins
them in dataset order.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import torch

from earthcast import __version__
from earthcast.data.base import ForecastLayout
from earthcast.io import AtomicFile

CONVENTIONS = "CF-1.10 earthcast-forecast-1"
#: the epoch every stored time counts from
TIME_UNITS = "minutes since 1970-01-01 00:00:00"
#: per-sample metadata: name → long_name
_STRING_META = {"event_id": "SEVIR event id", "event_type": "SEVIR event type (NWS Storm Events)",
                "time_utc": "SEVIR event time (catalog time_utc)", "model": "climate model of the sample (ICAR-ENSO)"}
_INT_META = {"init_month": "calendar month of the first forecast month",
             "seq_start": "first frame of the sample within its event"}
#: the SEVIR catalog's patch corners, one per sample
_CORNER_META = {"llcrnrlat": ("degrees_north", "latitude of the patch's lower-left corner"),
                "llcrnrlon": ("degrees_east", "longitude of the patch's lower-left corner"),
                "urcrnrlat": ("degrees_north", "latitude of the patch's upper-right corner"),
                "urcrnrlon": ("degrees_east", "longitude of the patch's upper-right corner")}
#: CF attributes of the usual names of horizontal coordinates
_AXES = {"lat": ("latitude", "degrees_north", "Y"), "latitude": ("latitude", "degrees_north", "Y"),
         "lon": ("longitude", "degrees_east", "X"), "longitude": ("longitude", "degrees_east", "X")}
#: attributes of a source variable that describe its encoding, not its meaning
_ENCODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "dtype", "coordinates",
                   "grid_mapping", "cell_methods", "valid_min", "valid_max", "valid_range")


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    if x.shape[-1] == 1:  # channels-last single channel
        x = x[..., 0]
    return x.numpy()


def _minutes(delta: pd.Timedelta) -> float:
    return delta / pd.Timedelta(minutes=1)


def coordinate_attrs(name: str, attrs: dict, axis: str) -> dict:
    """A horizontal coordinate's attributes with the CF ones filled in (standard_name, units, axis)."""
    known = _AXES.get(name.lower())
    out = {k: v for k, v in attrs.items() if k not in _ENCODING_ATTRS}
    if known:
        out = {"standard_name": known[0], "units": known[1], **out}
    out.setdefault("axis", known[2] if known else axis)
    return out


class ForecastFile:
    """Streams forecasts into one netCDF file; an ensemble (a prediction B × M × T × H × W[× 1]) gets a
    `member` dimension. `layout` (the dataset's) names the grid and describes the variable and the times."""

    def __init__(self, path: str | Path, dataset: str, attrs: dict | None = None, max_samples: int | None = None,
                 layout: ForecastLayout | None = None):
        self.path = Path(path)
        self.file = AtomicFile(self.path)
        self.dataset = dataset
        self.attrs = dict(attrs or {})
        self.max_samples = max_samples
        self.layout = layout or ForecastLayout()
        self.members = False
        self.n_written = 0
        self._nc: netCDF4.Dataset | None = None

    @property
    def full(self) -> bool:
        return self.max_samples is not None and self.n_written >= self.max_samples

    def _open(self, prediction: np.ndarray, target: np.ndarray | None, context: np.ndarray | None,
              meta: dict) -> None:
        self.members = prediction.ndim == 5
        layout = self.layout
        nc = netCDF4.Dataset(self.file.begin(), "w", format="NETCDF4")
        geographic = "lat" in meta and "lon" in meta  # ENSO: the grid comes with every batch
        grid = ("lat", "lon") if geographic else tuple(layout.grid)
        n_leads, (height, width) = prediction.shape[-3], prediction.shape[-2:]
        nc.createDimension("sample", None)
        if self.members:
            nc.createDimension("member", prediction.shape[1])
            var = nc.createVariable("member", "i4", ("member",))
            var[:] = np.arange(prediction.shape[1])
            var.setncatts({"standard_name": "realization", "long_name": "ensemble member", "units": "1"})
        self._lead_coordinate(nc, "lead_time", np.arange(1, n_leads + 1), "forecast lead time after init_time")
        for dim, size, axis in ((grid[0], height, "Y"), (grid[1], width, "X")):
            nc.createDimension(dim, size)
            values, attrs = layout.coords.get(dim, (None, {}))
            if geographic:
                values = np.asarray(meta[dim].cpu() if torch.is_tensor(meta[dim]) else meta[dim])
                values = values[0] if values.ndim == 2 else values
            if values is not None:
                var = nc.createVariable(dim, np.asarray(values).dtype if np.asarray(values).dtype.kind == "f" else "f8",
                                        (dim,))
                var[:] = values
                var.setncatts(coordinate_attrs(dim, attrs, axis))
        times = "init_time" in meta
        if times:
            described_times = [("init_time", ("sample",), "forecast_reference_time", "time of the last input frame")]
            if layout.frame is not None:
                described_times.append(("valid_time", ("sample", "lead_time"), "time", "time the forecast is for"))
            for name, dims, standard_name, long_name in described_times:
                var = nc.createVariable(name, "f8", dims)
                var.setncatts({"standard_name": standard_name, "long_name": long_name, "units": TIME_UNITS,
                               "calendar": "proleptic_gregorian"})
        spatial = grid
        described = {k: v for k, v in layout.variable.items() if k not in _ENCODING_ATTRS and k != "name"}
        described.setdefault("units", "1")
        chunk = (1, *prediction.shape[1:])
        pred_dims = ("sample", "member", "lead_time", *spatial) if self.members else ("sample", "lead_time", *spatial)
        arrays = [("prediction", pred_dims, chunk, "forecast")]
        if target is not None:
            arrays.append(("target", ("sample", "lead_time", *spatial), (1, *prediction.shape[-3:]), "observation"))
        if context is not None:
            nc.createDimension("context_time", context.shape[1])
            self._lead_coordinate(nc, "context_time", np.arange(1 - context.shape[1], 1),
                                  "time of the input frame relative to init_time")
            arrays.append(("context", ("sample", "context_time", *spatial), (1, *context.shape[1:]), "input"))
        for name, dims, chunks, role in arrays:
            var = nc.createVariable(name, "f4", dims, zlib=True, complevel=1, chunksizes=chunks,
                                    fill_value=np.float32(np.nan))
            long_name = described.get("long_name") or layout.variable.get("name") or self.dataset
            var.setncatts({**described, "long_name": f"{long_name} ({role})"})
            if times and name != "context":
                var.coordinates = " ".join(t[0] for t in described_times)
        for kind, described_meta in ((str, _STRING_META), ("i4", _INT_META)):
            for key, long_name in described_meta.items():
                if key in meta:
                    nc.createVariable(key, kind, ("sample",)).long_name = long_name
        for key, (units, long_name) in _CORNER_META.items():
            if key in meta:
                nc.createVariable(key, "f8", ("sample",)).setncatts({"units": units, "long_name": long_name})
        named = {"variable": layout.variable["name"]} if layout.variable.get("name") else {}
        nc.setncatts({"Conventions": CONVENTIONS, "title": f"earthcast forecasts on {self.dataset}",
                      "history": f"{pd.Timestamp.now('UTC'):%Y-%m-%dT%H:%M:%SZ} written by earthcast {__version__}",
                      "dataset": self.dataset, "earthcast_version": __version__, **named,
                      **{k: str(v) for k, v in {**layout.attrs, **self.attrs}.items()}})
        self._nc = nc

    def _lead_coordinate(self, nc: netCDF4.Dataset, name: str, steps: np.ndarray, long_name: str) -> None:
        """A lead (or input) offset in frames, as a duration when the frame interval is known."""
        if name not in nc.dimensions:
            nc.createDimension(name, len(steps))
        frame = self.layout.frame
        var = nc.createVariable(name, "f8" if frame is not None else "i4", (name,))
        if frame is not None:
            var[:] = steps * _minutes(pd.Timedelta(frame))
            var.units = "minutes"
            var.setncattr("dtype", "timedelta64[ns]")  # xarray's own mark: open_dataset decodes durations
        else:
            var[:] = steps
            var.units = self.layout.lead_units
        var.long_name = long_name
        if name == "lead_time":
            var.standard_name = "forecast_period"

    def write(self, prediction: torch.Tensor, target: torch.Tensor | None, context: torch.Tensor | None,
              meta: dict) -> None:
        if self.full:
            return
        pred = _as_numpy(prediction)
        tgt = _as_numpy(target) if target is not None else None
        ctx = _as_numpy(context) if context is not None else None
        if self._nc is None:
            self._open(pred, tgt, ctx, meta)
        take = len(pred) if self.max_samples is None else min(len(pred), self.max_samples - self.n_written)
        start, stop = self.n_written, self.n_written + take
        nc = self._nc
        nc["prediction"][start:stop] = pred[:take]
        if tgt is not None and "target" in nc.variables:
            nc["target"][start:stop] = tgt[:take]
        if ctx is not None and "context" in nc.variables:
            nc["context"][start:stop] = ctx[:take]
        if "init_time" in nc.variables and "init_time" in meta:
            init = pd.to_datetime(list(meta["init_time"])[:take])
            minutes = np.asarray((init - pd.Timestamp("1970-01-01")) / pd.Timedelta(minutes=1), dtype=np.float64)
            nc["init_time"][start:stop] = minutes
            if "valid_time" in nc.variables:
                nc["valid_time"][start:stop] = minutes[:, None] + np.asarray(nc["lead_time"][:])[None, :]
        for key in _STRING_META:
            if key in meta and key in nc.variables:
                for i, value in enumerate(list(meta[key])[:take]):
                    nc[key][start + i] = str(value)
        for key in (*_INT_META, *_CORNER_META):
            if key in meta and key in nc.variables:
                values = meta[key]
                values = values.cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
                nc[key][start:stop] = values[:take]
        self.n_written = stop

    def close(self) -> Path | None:
        """Finish the file and move it into place; returns its path (None when nothing was written)."""
        if self._nc is None:
            return None
        self._nc.close()
        self._nc = None
        return self.file.commit()

    def abort(self) -> None:
        if self._nc is not None:
            self._nc.close()
            self._nc = None
        self.file.discard()


def rank_part_path(path: str | Path, rank: int) -> Path:
    """Where rank `rank` of a multi-process evaluation writes its share of `path`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def merge_rank_parts(path: str | Path, world_size: int, max_samples: int | None = None) -> Path | None:
    """Join the per-rank files of a distributed evaluation into `path`, in dataset order, and delete them.

    With an unrepeated distributed sampler rank r holds samples r, r + W, r + 2W, … (W = world size), so the
    k-th sample of rank r's file is sample k·W + r. Copied one sample at a time with the parts' own layout
    (compression, chunks, attributes), so memory stays at one sample however large the split."""
    path = Path(path)
    parts = {rank: rank_part_path(path, rank) for rank in range(world_size)}
    parts = {rank: part for rank, part in parts.items() if part.is_file()}
    if not parts:
        return None
    sources = {rank: netCDF4.Dataset(part) for rank, part in parts.items()}
    try:
        order = sorted((k * world_size + rank, rank, k)
                       for rank, src in sources.items() for k in range(len(src.dimensions["sample"])))
        order = order[:max_samples] if max_samples is not None else order
        first = sources[min(sources)]
        with AtomicFile(path) as tmp_path, netCDF4.Dataset(tmp_path, "w", format="NETCDF4") as out:
            out.setncatts({name: first.getncattr(name) for name in first.ncattrs()})
            for name, dim in first.dimensions.items():
                out.createDimension(name, None if dim.isunlimited() else len(dim))
            per_sample = []
            for name, var in first.variables.items():
                filters = var.filters() or {}
                chunks = var.chunking()
                # a fill value is part of the variable's creation, the other attributes follow it
                fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
                copy = out.createVariable(name, var.datatype, var.dimensions, zlib=bool(filters.get("zlib")),
                                          complevel=filters.get("complevel", 4), shuffle=bool(filters.get("shuffle")),
                                          chunksizes=None if chunks == "contiguous" else chunks, fill_value=fill)
                copy.setncatts({attr: var.getncattr(attr) for attr in var.ncattrs() if attr != "_FillValue"})
                if var.dimensions[:1] == ("sample",):
                    per_sample.append(name)
                else:
                    copy[:] = var[:]
            for index, (_, rank, k) in enumerate(order):
                for name in per_sample:
                    out.variables[name][index] = sources[rank].variables[name][k]
    finally:
        for src in sources.values():
            src.close()
    for part in parts.values():
        part.unlink()
    return path
