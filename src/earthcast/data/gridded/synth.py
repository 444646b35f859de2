"""`dataset=gridded_synth`: a small gridded store in the layout real ones have, to try `dataset=gridded` on.

One netCDF file per month (CF-1.10: `time` in hours since 1970, `lat`/`lon` in degrees with standard names)
holding `sst` (K, standard_name sea_surface_temperature), 6-hourly on a regular lat/lon grid, NaN over a
"continent" (so the mask handling is exercised), and a static `lsm` land–sea mask (1 = land). The field is a
latitude profile with a seasonal cycle, plus anomalies that travel east at a fixed speed and decay slowly,
renewed by smooth random forcing: a forecastable signal (advection) and an unforecastable one (new forcing).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import gaussian_filter

from earthcast.data.base import SYNTHESIZERS, write_twin_record
from earthcast.io import atomic_directory


def sst_fields(cfg: Mapping, times: pd.DatetimeIndex, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """float32 T × lat × lon SST in K (NaN nowhere; the land mask is applied by the caller)."""
    rng = np.random.default_rng(int(cfg["seed"]))
    height, width = len(lat), len(lon)
    base = 273.15 + 28.0 * np.cos(np.deg2rad(lat))[:, None] ** 2 * np.ones((1, width))
    day_of_year = times.dayofyear.values
    season = float(cfg["seasonal_amplitude"]) * np.sin(2 * np.pi * (day_of_year - 80) / 365.25)
    hemisphere = np.sign(lat)[:, None]
    shift = float(cfg["speed_cells_per_step"])
    persistence = float(cfg["persistence"])
    anomaly = np.zeros((height, width))
    out = np.empty((len(times), height, width), dtype=np.float32)
    for t in range(len(times)):
        # advect east by a fractional number of cells (periodic in longitude), damp, add smooth forcing
        whole, part = int(np.floor(shift)), shift - np.floor(shift)
        moved = np.roll(anomaly, whole, axis=1)
        anomaly = (1 - part) * moved + part * np.roll(moved, 1, axis=1)
        forcing = gaussian_filter(rng.standard_normal((height, width)), sigma=float(cfg["forcing_length_cells"]),
                                  mode=("nearest", "wrap"))
        anomaly = persistence * anomaly + float(cfg["forcing_amplitude"]) * forcing / forcing.std()
        out[t] = base + hemisphere * season[t] + anomaly
    return out


def land_mask(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """1 on an elliptic "continent" in the middle of the grid, 0 elsewhere."""
    la, lo = np.meshgrid((lat - lat.mean()) / np.ptp(lat), (lon - lon.mean()) / np.ptp(lon), indexing="ij")
    return ((la / 0.3) ** 2 + (lo / 0.15) ** 2 <= 1.0).astype(np.int8)


def synthesize_gridded(cfg_dataset: Mapping, progress: bool = True) -> Path:
    cfg = cfg_dataset["synth"]
    root = Path(str(cfg_dataset["root"])).expanduser()
    height, width = int(cfg["height"]), int(cfg["width"])
    lat = np.linspace(-60, 60, height)
    lon = np.linspace(0, 360, width, endpoint=False)
    times = pd.date_range(str(cfg["start"]), str(cfg["end"]), freq=str(cfg["time_step"]), inclusive="left")
    sst = sst_fields(cfg, times, lat, lon)
    land = land_mask(lat, lon)
    sst[:, land == 1] = np.nan
    coords = {
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
    }
    encoding = {"time": {"units": "hours since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian",
                         "dtype": "float64"},
                "sst": {"zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)}}
    with atomic_directory(root) as tmp:
        for month, where in pd.Series(np.arange(len(times)), index=times).groupby(times.to_period("M")):
            index = where.values
            ds = xr.Dataset(
                {"sst": (("time", "lat", "lon"), sst[index],
                         {"units": "K", "standard_name": "sea_surface_temperature",
                          "long_name": "sea surface temperature (synthetic)"}),
                 "lsm": (("lat", "lon"), land, {"units": "1", "long_name": "land-sea mask (1 = land)"})},
                coords={"time": ("time", times[index], {"standard_name": "time", "axis": "T"}), **coords},
                attrs={"Conventions": "CF-1.10", "title": "earthcast synthetic gridded store",
                       "source": "earthcast.data.gridded.synth"})
            ds.to_netcdf(tmp / f"sst_{month}.nc", encoding=encoding)
        write_twin_record(tmp, cfg_dataset, ("synth",))  # a directory store reads only its netCDF files
    return root


SYNTHESIZERS.register("gridded")(synthesize_gridded)
