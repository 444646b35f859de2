"""Synthetic ICAR-ENSO twin: files in exactly the real layout, from a stochastic recharge oscillator.

Each synthetic "model" is one run of a recharge oscillator (Jin 1997) for the equatorial-Pacific SST anomaly
T and the thermocline depth (warm-water volume) anomaly h, integrated with 8 steps a month:

    dT/dt = R(t)·T + γ·h + σ·ξ(t)        dh/dt = −r·h − α·T

ξ is red noise (AR(1), 0.5 a month). The growth rate R(t) = R0 + R1·cos(2π(month − peak_growth_month)/12)
varies with the season — coupling is strongest in boreal autumn and weakest in spring — which locks
events to peak in boreal winter (Nov–Jan) and gives a spring persistence barrier. R0, γα and r are set from
each model's free oscillation period (drawn in `period_months`, 4.5–6.5 years; red noise and the seasonal
modulation shorten the realised one) and decay time (`damping_months`, 2–3 years), so the Nino3.4 spectrum
peaks at 4–5 years and persistence skill decays with lead (measured values: data/README.md).

The SST anomaly field on the 24 × 72 grid (lat −55…60, lon 0…355, 5°) is
    A·T·P_enso + 0.3·h·P_recharge + lagged teleconnections + spatially correlated red noise,
where P_enso is centred on the central/eastern equatorial Pacific (per-model centre 215–250°E, meridional
e-folding 6–9°, i.e. confined to about ±15°) with a weak negative horseshoe to the west, scaled so its
Nino3.4-box mean is 1; A (the model's ENSO amplitude) varies by ±30 % between models; teleconnections are
Indian Ocean and tropical Atlantic warming 3–5 months after the Pacific and a North Pacific cooling. The
noise is white noise smoothed over ~10° (wrapping in longitude), red in time (AR(1) 0.6 a month), and
larger in the extratropics. t300 (heat content: h plus the zonal tilt from T), ua and va (wind anomalies
west of the warming) are written as compressed low-precision fields so the layout matches; readers skip them.

Labels follow the reader's convention (earthcast.data.enso): nino at month m is the forward 3-month mean of
the Nino3.4-box mean of the *written* float32 SST over months m, m+1, m+2, computed on the continuous run (2
extra months are simulated past the last record) before it is cut into 36-month records with a 12-month
stride, so overlapping records agree exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from rich.progress import Progress
from scipy.ndimage import gaussian_filter

from earthcast.config import plain
from earthcast.data.base import SYNTHESIZERS, write_twin_record
from earthcast.data.enso.archive import (
    RECORD_MONTHS,
    RECORD_STRIDE,
    SOURCE_FILES,
    forward_running_mean,
    nino34_box_mean,
    series_length,
)
from earthcast.errors import UserError
from earthcast.io import AtomicFile, atomic_directory

LAT = np.arange(-55.0, 60.0 + 1e-9, 5.0, dtype=np.float32)  # 24
LON = np.arange(0.0, 360.0, 5.0, dtype=np.float32)  # 72
STEPS_PER_MONTH = 8
GROUP_STREAM = {"cmip6": 0, "cmip5": 1, "soda": 2}  # random stream per group, stable when counts change

def simulate_recharge_oscillator(n_months: int, rng: np.random.Generator, period_months: float,
                                 damping_months: float, phase_locking: float, peak_growth_month: float,
                                 burn_in_months: int) -> tuple[np.ndarray, np.ndarray]:
    """Monthly means of (T, h), each scaled to unit standard deviation; month 0 is a January."""
    r = 1.0 / 24.0  # thermocline adjustment rate, 1/month
    omega = 2.0 * np.pi / period_months
    growth_mean = r - 2.0 / damping_months  # R0: trace R0 − r = −2/τ gives amplitude decay time τ
    coupling = omega**2 + ((growth_mean - r) / 2.0) ** 2 + growth_mean * r  # γα from the eigenfrequency
    gamma = alpha = np.sqrt(coupling)
    dt = 1.0 / STEPS_PER_MONTH
    total = n_months + burn_in_months
    shocks = rng.standard_normal(total)
    temperature = heat = forcing = 0.0
    out = np.empty((total, 2))
    for month in range(total):
        forcing = 0.5 * forcing + np.sqrt(0.75) * shocks[month]
        mean_t = mean_h = 0.0
        for step in range(STEPS_PER_MONTH):
            season = (month - burn_in_months + step * dt) % 12.0
            growth = growth_mean + phase_locking * np.cos(2.0 * np.pi * (season - peak_growth_month) / 12.0)
            d_t = growth * temperature + gamma * heat + 0.25 * forcing
            d_h = -r * heat - alpha * temperature
            temperature += dt * d_t
            heat += dt * d_h
            mean_t += temperature * dt
            mean_h += heat * dt
        out[month] = mean_t, mean_h
    out = out[burn_in_months:]
    return out[:, 0] / out[:, 0].std(), out[:, 1] / out[:, 1].std()


def _gauss(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / width) ** 2)


def spatial_patterns(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-model lat × lon patterns (ENSO, recharge, teleconnections, t300/ua/va)."""
    lat, lon = np.meshgrid(LAT.astype(np.float64), LON.astype(np.float64), indexing="ij")
    centre = rng.uniform(215.0, 250.0)
    lat_width = rng.uniform(6.0, 9.0)
    zonal = np.where(lon < centre, _gauss(lon, centre, rng.uniform(30.0, 45.0)), _gauss(lon, centre, 25.0))
    coast = 1.0 / (1.0 + np.exp((lon - 283.0) / 3.0))  # the Americas end the basin near 80°W
    enso = zonal * coast * _gauss(lat, 0.0, lat_width)
    horseshoe = _gauss(np.abs(lat), 20.0, 8.0) * _gauss(lon, 165.0, 25.0)
    enso = enso - 0.3 * horseshoe - 0.2 * _gauss(lat, 0.0, 8.0) * _gauss(lon, 135.0, 15.0)
    enso /= nino34_box_mean(enso, LAT, LON)
    equator = _gauss(lat, 0.0, 8.0)
    return {
        "enso": enso,
        "recharge": _gauss(lat, 0.0, 12.0) * _gauss(lon, 150.0, 25.0),
        "indian": 0.25 * _gauss(lat, -5.0, 15.0) * _gauss(lon, 75.0, 20.0),
        "atlantic": 0.2 * _gauss(lat, 10.0, 10.0) * _gauss(lon, 320.0, 20.0),
        "north_pacific": -0.3 * _gauss(lat, 40.0, 8.0) * _gauss(lon, 190.0, 30.0),
        "t300_h": equator * _gauss(lon, 200.0, 60.0),
        "t300_tilt": 0.8 * equator * np.tanh((lon - 200.0) / 40.0),
        "ua": 1.5 * _gauss(lat, 0.0, 10.0) * _gauss(lon, 180.0, 30.0),
        "va": -0.3 * (lat / 10.0) * _gauss(lat, 0.0, 10.0) * _gauss(lon, 200.0, 40.0),
    }


def correlated_noise(n_months: int, rng: np.random.Generator, params: dict) -> np.ndarray:
    """Red-in-time, smooth-in-space noise (months × lat × lon), °C."""
    sigma = params["noise_length_deg"] / 5.0
    white = rng.standard_normal((n_months, LAT.size, LON.size))
    smooth = gaussian_filter(white, sigma=(0.0, sigma, sigma), mode=("constant", "nearest", "wrap"))
    smooth /= smooth.std()
    rho = params["noise_memory"]
    for month in range(1, n_months):
        smooth[month] = rho * smooth[month - 1] + np.sqrt(1.0 - rho**2) * smooth[month]
    amplitude = params["noise_std"] * (1.0 + 1.2 * np.abs(LAT) / 60.0)
    return smooth * amplitude[None, :, None]


def lagged(x: np.ndarray, months: int) -> np.ndarray:
    return np.concatenate([np.zeros(months), x[:-months]]) if months else x


def simulate_model(n_records: int, rng: np.random.Generator, params: dict) -> dict[str, np.ndarray]:
    """One model's continuous run: float32 fields (months × lat × lon) and its nino labels (months)."""
    n_months = series_length(n_records)
    extended = n_months + 2  # the last labels need two months past the last record
    temperature, heat = simulate_recharge_oscillator(
        extended, rng, rng.uniform(*params["period_months"]), rng.uniform(*params["damping_months"]),
        rng.uniform(*params["phase_locking"]), params["peak_growth_month"], int(params["burn_in_months"]))
    patterns = spatial_patterns(rng)
    amplitude = params["enso_amplitude"] * rng.uniform(1.0 - params["amplitude_spread"],
                                                       1.0 + params["amplitude_spread"])
    t, h = temperature[:, None, None], heat[:, None, None]
    sst = (amplitude * t * patterns["enso"] + 0.3 * h * patterns["recharge"]
           + amplitude * (lagged(temperature, 3)[:, None, None] * patterns["indian"]
                          + lagged(temperature, 5)[:, None, None] * patterns["atlantic"]
                          + t * patterns["north_pacific"])
           + correlated_noise(extended, rng, params)).astype(np.float32)
    nino = forward_running_mean(nino34_box_mean(sst, LAT, LON).astype(np.float64)).astype(np.float32)
    return {
        "sst": sst[:n_months],
        "t300": (h * patterns["t300_h"] + t * patterns["t300_tilt"])[:n_months].astype(np.float32),
        "ua": (t * patterns["ua"])[:n_months].astype(np.float32),
        "va": (t * patterns["va"])[:n_months].astype(np.float32),
        "nino": nino[:n_months],
    }


def cut_records(series: np.ndarray, n_records: int) -> np.ndarray:
    """(months, ...) → (n_records, 36, ...): record r is months 12r … 12r+35."""
    months = RECORD_STRIDE * np.arange(n_records)[:, None] + np.arange(RECORD_MONTHS)[None, :]
    return series[months]


def _write_grouped(directory: Path, source: str, runs: list[tuple[int, dict[str, np.ndarray]]],
                   attrs: dict) -> None:
    """Cut each (records, run) into records and write the train/label pair of files, models in order."""
    train_name, label_name = SOURCE_FILES[source]
    fields = {name: np.concatenate([cut_records(run[name], records) for records, run in runs])
              for name in ("sst", "t300", "ua", "va", "nino")}
    n_rows = fields["sst"].shape[0]
    coords = {"year": np.arange(1, n_rows + 1, dtype=np.int32), "month": np.arange(1, RECORD_MONTHS + 1,
                                                                                   dtype=np.int32)}
    dims = ("year", "month", "lat", "lon")
    train = xr.Dataset({name: (dims, fields[name]) for name in ("sst", "t300", "ua", "va")},
                       coords={**coords, "lat": LAT, "lon": LON}, attrs=attrs)
    labels = xr.Dataset({"nino": (("year", "month"), fields["nino"])}, coords=coords, attrs=attrs)
    # the side variables only need the layout: low precision and compression keep them small
    small = {"zlib": True, "complevel": 4, "least_significant_digit": 2}
    encoding = {"sst": {"dtype": "float32"}, **{name: {"dtype": "float32", **small} for name in ("t300", "ua", "va")}}
    label_encoding = {"nino": {"dtype": "float32"}}
    for dataset, name, enc in ((train, train_name, encoding), (labels, label_name, label_encoding)):
        with AtomicFile(directory / name) as temporary:
            dataset.to_netcdf(temporary, engine="netcdf4", format="NETCDF4", encoding=enc)


def synth_params(cfg_dataset: Any) -> dict:
    """`dataset.synth` (configs/dataset/enso_synth.yaml), checked."""
    params = dict(plain(cfg_dataset)["synth"])
    for key in ("n_cmip6_models", "n_cmip5_models", "soda_records"):
        if int(params[key]) < 0:
            raise UserError(f"dataset.synth.{key} must be ≥ 0")
    for key in ("cmip6_records", "cmip5_records"):
        if int(params[key]) < 1:
            raise UserError(f"dataset.synth.{key} must be ≥ 1")
    if int(params["n_cmip6_models"]) + int(params["n_cmip5_models"]) == 0:
        raise UserError("dataset.synth needs at least one model (n_cmip6_models or n_cmip5_models > 0)")
    return params


@SYNTHESIZERS.register("enso")
def synthesize_enso(cfg_dataset: Any, progress: bool = True) -> Path:
    """Write CMIP_train.nc / CMIP_label.nc (and SODA_* when soda_records > 0) under cfg_dataset.root."""
    cfg = plain(cfg_dataset)
    if not cfg["root"]:
        raise UserError("dataset.root is not set; set paths.data_root=<dir> or EARTHCAST_DATA_ROOT")
    root = Path(cfg["root"])
    params = synth_params(cfg)
    groups = [(group, int(params[f"n_{group}_models"]), int(params[f"{group}_records"]))
              for group in ("cmip6", "cmip5")]
    if int(params["soda_records"]) > 0:
        groups.append(("soda", 1, int(params["soda_records"])))
    attrs = {"title": "earthcast synthetic ICAR-ENSO twin (recharge oscillator)",
             "generator": "earthcast.data.enso.synth",
             "seed": int(params["seed"]),
             "models": "; ".join(f"{group}: {models} x {records} records" for group, models, records in groups)}
    with atomic_directory(root) as building, Progress(disable=not progress) as bar:
        task = bar.add_task(f"synthesizing ENSO twin in {root}", total=sum(m for _, m, _ in groups) + 1)
        runs_by_file: dict[str, list] = {"cmip": [], "soda": []}
        for group, models, records in groups:
            for number in range(1, models + 1):
                rng = np.random.default_rng([int(params["seed"]), GROUP_STREAM[group], number])
                run = simulate_model(records, rng, params)
                runs_by_file["soda" if group == "soda" else "cmip"].append((records, run))
                bar.advance(task)
        for source, runs in runs_by_file.items():
            if runs:  # CMIP6 then CMIP5 rows, as in the real file; records per model may differ
                _write_grouped(building, source, runs, attrs)
        write_twin_record(building, cfg, ("synth",))  # the splits only pick among the files' models
        bar.advance(task)
    return root
