"""The Niño 3.4 index: SST anomaly averaged over 5°S–5°N, 170°W–120°W, smoothed by a 3-month running mean.

The box is selected by coordinate values, never by fixed array indices, so any grid works: longitudes in
0–360 or −180–180 (both are taken modulo 360, so 170°W–120°W is 190–240°E), latitudes ascending or
descending. Bounds are inclusive (the 5° ICAR-ENSO grid has 3 latitudes × 11 longitudes in the box).

Running mean: the index labelled with month t is the mean of months t, t+1, t+2 (the ICAR-ENSO /
Earthformer convention: 14 predicted months give index leads 1–12, lead l averaging months l..l+2), so a
series of T months gives T−2 values. With `cos_lat_weight` the box mean is weighted by cos(latitude); the
published ICAR-ENSO scores use the plain mean (inside ±5° the two differ by < 0.4 % in weight).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from earthcast.errors import UserError

NINO34_LAT_RANGE = (-5.0, 5.0)
NINO34_LON_RANGE = (190.0, 240.0)  # degrees east; 170°W–120°W
NINO34_RUNNING_MEAN_MONTHS = 3
_COORDINATE_TOLERANCE = 1e-4  # degrees: float32 grids store 5.0 exactly, but computed grids may not


def nino34_box_weights(
    lat: np.ndarray,
    lon: np.ndarray,
    lat_range: Sequence[float] = NINO34_LAT_RANGE,
    lon_range: Sequence[float] = NINO34_LON_RANGE,
    cos_lat_weight: bool = False,
) -> np.ndarray:
    """Weights (..., nlat, nlon) summing to 1 over the box (0 outside) for lat (..., nlat), lon (..., nlon)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.mod(np.asarray(lon, dtype=np.float64), 360.0)
    lat_min, lat_max = sorted(float(value) for value in lat_range)
    lon_west, lon_east = (float(value) % 360.0 for value in lon_range)
    tol = _COORDINATE_TOLERANCE
    in_lat = (lat >= lat_min - tol) & (lat <= lat_max + tol)
    if lon_west <= lon_east:
        in_lon = (lon >= lon_west - tol) & (lon <= lon_east + tol)
    else:  # a box across the 0° meridian
        in_lon = (lon >= lon_west - tol) | (lon <= lon_east + tol)
    lat_weight = np.where(in_lat, np.cos(np.deg2rad(lat)) if cos_lat_weight else 1.0, 0.0)
    weights = lat_weight[..., :, None] * in_lon[..., None, :]
    totals = weights.sum(axis=(-2, -1), keepdims=True)
    if np.any(totals == 0):
        raise UserError(
            f"no grid point inside the Niño 3.4 box (lat {lat_min:g}..{lat_max:g}, lon {lon_west:g}..{lon_east:g}"
            " °E); check the lat/lon coordinates (degrees) or evaluator.lat_range/lon_range"
        )
    return weights / totals


def running_mean(series: torch.Tensor, months: int) -> torch.Tensor:
    """(..., T) → (..., T−months+1), value t = mean of t..t+months−1 (forward window, labelled at its start)."""
    if months == 1:
        return series
    return series.unfold(-1, months, 1).mean(dim=-1)


def nino34_index(
    sst: xr.DataArray,
    *,
    lat_range: Sequence[float] = NINO34_LAT_RANGE,
    lon_range: Sequence[float] = NINO34_LON_RANGE,
    cos_lat_weight: bool = False,
    running_mean_months: int = NINO34_RUNNING_MEAN_MONTHS,
    time_dim: str = "time",
    lat_name: str = "lat",
    lon_name: str = "lon",
) -> xr.DataArray:
    """Niño 3.4 index of SST anomalies (°C) with `lat`/`lon` coordinates in degrees; see the module docstring.

    Other dims (samples, ensemble members) are kept. NaN cells (land, missing data) are left out of the box
    mean. With running_mean_months > 1 the `time_dim` shrinks by running_mean_months − 1 and keeps the
    coordinate values of each window's first month.
    """
    for name in (lat_name, lon_name):
        if name not in sst.coords:
            raise UserError(f"SST array has no {name!r} coordinate; give its {name} values in degrees")
        if sst[name].ndim != 1:
            raise UserError(f"SST coordinate {name!r} must be one-dimensional, got dims {sst[name].dims}")
    if isinstance(running_mean_months, bool) or not isinstance(running_mean_months, int) or running_mean_months < 1:
        raise UserError(f"running_mean_months must be a positive integer, got {running_mean_months!r}")
    lat_dim, lon_dim = sst[lat_name].dims[0], sst[lon_name].dims[0]
    weights = nino34_box_weights(sst[lat_name].values, sst[lon_name].values, lat_range, lon_range, cos_lat_weight)
    weights = xr.DataArray(weights, dims=(lat_dim, lon_dim))
    box_mean = sst.weighted(weights).mean(dim=(lat_dim, lon_dim))
    if running_mean_months == 1:
        return box_mean.rename("nino34")
    if time_dim not in box_mean.dims:
        raise UserError(f"SST array has no {time_dim!r} dim for the running mean; pass time_dim=<name>")
    n_months = box_mean.sizes[time_dim]
    if n_months < running_mean_months:
        raise UserError(f"{n_months} months is shorter than the {running_mean_months}-month running mean")
    smoothed = box_mean.rolling({time_dim: running_mean_months}).mean()
    smoothed = smoothed.isel({time_dim: slice(running_mean_months - 1, None)})
    if time_dim in box_mean.coords:
        first_months = box_mean[time_dim].values[: n_months - running_mean_months + 1]
        smoothed = smoothed.assign_coords({time_dim: first_months})
    return smoothed.rename("nino34")
