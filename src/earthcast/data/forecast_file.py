"""Forecast files (predictions.nc): written batch by batch in the stored-forecast schema of
docs/forecast_files.md, which `earthcast eval predictions=<file>` reads back (earthcast.metrics.stored).

A file is written under a temporary name and renamed when complete (earthcast.io), so a crashed run never
leaves a file that looks finished. Under DDP every rank writes its own part and `merge_rank_parts` joins
them in dataset order.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import torch

from earthcast import __version__
from earthcast.io import AtomicFile

_STRING_META = ("event_id", "event_type", "time_utc", "model")
_INT_META = ("init_month", "seq_start")


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    if x.shape[-1] == 1:  # channels-last single channel
        x = x[..., 0]
    return x.numpy()


class ForecastFile:
    """Streams forecasts into one netCDF file; an ensemble (prediction with one more dim than the target,
    B × M × T × …) gets a `member` dimension."""

    def __init__(self, path: str | Path, dataset: str, attrs: dict | None = None, max_samples: int | None = None):
        self.path = Path(path)
        self.file = AtomicFile(self.path)
        self.dataset = dataset
        self.attrs = dict(attrs or {})
        self.max_samples = max_samples
        self.members = False
        self.n_written = 0
        self._nc: netCDF4.Dataset | None = None

    @property
    def full(self) -> bool:
        return self.max_samples is not None and self.n_written >= self.max_samples

    def _open(self, prediction: np.ndarray, target: np.ndarray, context: np.ndarray | None, meta: dict) -> None:
        self.members = prediction.ndim > target.ndim
        nc = netCDF4.Dataset(self.file.begin(), "w", format="NETCDF4")
        geographic = "lat" in meta and "lon" in meta
        ydim, xdim = ("lat", "lon") if geographic else ("y", "x")
        height, width = prediction.shape[-2:]
        nc.createDimension("sample", None)
        if self.members:
            nc.createDimension("member", prediction.shape[1])
        nc.createDimension("lead_time", prediction.shape[-3])
        nc.createDimension(ydim, height)
        nc.createDimension(xdim, width)
        if geographic:
            for name, values in (("lat", meta["lat"]), ("lon", meta["lon"])):
                values = np.asarray(values.cpu() if torch.is_tensor(values) else values)
                var = nc.createVariable(name, "f4", (name,))
                var[:] = values[0] if values.ndim == 2 else values
                var.units = "degrees_north" if name == "lat" else "degrees_east"
        spatial = (ydim, xdim)
        chunk = (1, *prediction.shape[1:])
        pred_dims = ("sample", "member", "lead_time", *spatial) if self.members else ("sample", "lead_time", *spatial)
        units = "degC" if geographic else "VIL (0-255)"
        for name, dims, chunks in (("prediction", pred_dims, chunk),
                                   ("target", ("sample", "lead_time", *spatial), (1, *prediction.shape[-3:]))):
            var = nc.createVariable(name, "f4", dims, zlib=True, complevel=1, chunksizes=chunks)
            var.units = units
        if context is not None:
            nc.createDimension("context_time", context.shape[1])
            var = nc.createVariable("context", "f4", ("sample", "context_time", *spatial), zlib=True, complevel=1,
                                    chunksizes=(1, *context.shape[1:]))
            var.units = units
        for key in _STRING_META:
            if key in meta:
                nc.createVariable(key, str, ("sample",))
        for key in _INT_META:
            if key in meta:
                nc.createVariable(key, "i4", ("sample",))
        nc.setncatts({"dataset": self.dataset, "earthcast_version": __version__,
                      "Conventions": "earthcast-forecast-1", **{k: str(v) for k, v in self.attrs.items()}})
        self._nc = nc

    def write(self, prediction: torch.Tensor, target: torch.Tensor, context: torch.Tensor | None,
              meta: dict) -> None:
        if self.full:
            return
        pred, tgt = _as_numpy(prediction), _as_numpy(target)
        ctx = _as_numpy(context) if context is not None else None
        if self._nc is None:
            self._open(pred, tgt, ctx, meta)
        take = len(pred) if self.max_samples is None else min(len(pred), self.max_samples - self.n_written)
        start, stop = self.n_written, self.n_written + take
        nc = self._nc
        nc["prediction"][start:stop] = pred[:take]
        nc["target"][start:stop] = tgt[:take]
        if ctx is not None and "context" in nc.variables:
            nc["context"][start:stop] = ctx[:take]
        for key in _STRING_META:
            if key in meta and key in nc.variables:
                for i, value in enumerate(list(meta[key])[:take]):
                    nc[key][start + i] = str(value)
        for key in _INT_META:
            if key in meta and key in nc.variables:
                values = meta[key]
                values = values.cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
                nc[key][start:stop] = values[:take].astype("i4")
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
                copy = out.createVariable(name, var.datatype, var.dimensions, zlib=bool(filters.get("zlib")),
                                          complevel=filters.get("complevel", 4), shuffle=bool(filters.get("shuffle")),
                                          chunksizes=None if chunks == "contiguous" else chunks)
                copy.setncatts({attr: var.getncattr(attr) for attr in var.ncattrs()})
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
