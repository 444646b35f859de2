"""ICAR-ENSO files → one continuous monthly series per climate model (the reader's first half).

Layout (Tianchi "AI Earth" 2021, data/README.md): `CMIP_train.nc` holds `sst` (and t300/ua/va, never
read) as year × month × lat × lon = 4645 × 36 × 24 × 72 on a 5° grid (lat −55…60, lon 0…355);
`CMIP_label.nc` holds `nino` as year × month. Rows are 15 CMIP6 models × 151 records, then 17 CMIP5 models ×
140 records. Record r of a model covers months 12r … 12r+35 of one continuous run (each record starts in
January), so consecutive records share 24 months. We fold the records back into one series per model
(12·(R−1)+36 months), checking that the shared months agree. `SODA_train.nc` / `SODA_label.nc` have the
same layout with one "model" and are read only when a split names `soda`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from earthcast.errors import UserError

log = logging.getLogger("earthcast")

RECORD_MONTHS = 36
RECORD_STRIDE = 12
SST_DIMS = ("year", "month", "lat", "lon")
LABEL_DIMS = ("year", "month")
#: Nino3.4 box: 5°S–5°N, 170°W–120°W in degrees east
NINO34_LAT = (-5.0, 5.0)
NINO34_LON = (190.0, 240.0)
GROUPS = ("cmip6", "cmip5", "soda")
SOURCE_FILES = {"cmip": ("CMIP_train.nc", "CMIP_label.nc"), "soda": ("SODA_train.nc", "SODA_label.nc")}


def series_length(n_records: int) -> int:
    return RECORD_STRIDE * (n_records - 1) + RECORD_MONTHS


def count_windows(length: int, window: int, stride: int = 1) -> int:
    return 0 if length < window else (length - window) // stride + 1


def source_of(group: str) -> str:
    return "soda" if group == "soda" else "cmip"


@dataclass(frozen=True)
class ModelSlot:
    """Where one model's records sit in its file."""

    group: str
    number: int  # 1-based within the group
    first_row: int  # index of its first record along `year`
    n_records: int

    @property
    def name(self) -> str:
        return "SODA" if self.group == "soda" else f"{self.group.upper()}-{self.number}"

    @property
    def length(self) -> int:
        return series_length(self.n_records)


@dataclass
class ModelSeries:
    """One model's folded monthly series, cropped to the kept longitudes."""

    slot: ModelSlot
    sst: np.ndarray  # float32 months × lat × lon, °C anomaly, NaN filled with 0
    nino: np.ndarray  # float32 months
    lat: np.ndarray
    lon: np.ndarray
    sst_nan: int
    nino_nan: int
    overlap_diff: tuple[float, float] = (0.0, 0.0)  # largest disagreement of shared months: sst, nino


def nino34_box_mean(sst: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Unweighted mean of (..., lat, lon) SST over the Nino3.4 box (the 5° grid points on its edges included)."""
    rows = (lat >= NINO34_LAT[0] - 1e-6) & (lat <= NINO34_LAT[1] + 1e-6)
    cols = (np.mod(lon, 360.0) >= NINO34_LON[0] - 1e-6) & (np.mod(lon, 360.0) <= NINO34_LON[1] + 1e-6)
    return sst[..., rows, :][..., cols].mean(axis=(-2, -1))


def forward_running_mean(index: np.ndarray, window: int = 3) -> np.ndarray:
    """Label convention: value at month m is the mean of months m … m+window−1 (len shrinks by window−1)."""
    kernel = np.ones(window) / window
    return np.convolve(index, kernel, mode="valid")


def open_checked(path: Path, variable: str, dims: tuple[str, ...]) -> xr.Dataset:
    """Open a netCDF file lazily (nothing but metadata is read) and check one variable's dims."""
    if not path.is_file():
        raise UserError(f"{path} not found; download ICAR-ENSO into dataset.root (see data/README.md) "
                        f"or use dataset=enso_synth")
    try:
        ds = xr.open_dataset(path, engine="netcdf4", cache=False, decode_times=False)
    except Exception as error:  # corrupt or not netCDF: say which file
        raise UserError(f"{path} could not be opened as netCDF ({type(error).__name__}); re-download it") from None
    if variable not in ds.variables:
        ds.close()
        raise UserError(f"{path} has no variable {variable!r} (found: {', '.join(map(str, ds.data_vars))}); "
                        f"is this the ICAR-ENSO file?")
    if tuple(ds[variable].dims) != dims:
        found = tuple(ds[variable].dims)
        ds.close()
        raise UserError(f"{path}: variable {variable!r} has dims {found}, expected {dims}; "
                        f"this is not the ICAR-ENSO layout")
    if ds.sizes["month"] != RECORD_MONTHS:
        ds.close()
        raise UserError(f"{path}: month dimension is {ds.sizes['month']}, expected {RECORD_MONTHS} "
                        f"(36-month records)")
    return ds


def fold_records(records: np.ndarray, atol: float, where: str, first_row: int = 0) -> tuple[np.ndarray, float]:
    """(R, 36, ...) records with a 12-month stride → (12·(R−1)+36, ...) series and the largest disagreement.

    Months shared by consecutive records must agree within atol (NaN compares as agreeing); a NaN in one
    copy of a month is filled from another copy when one has a value.
    """
    n_records = records.shape[0]
    overlap = RECORD_MONTHS - RECORD_STRIDE
    max_diff = 0.0
    if n_records > 1:
        diff = np.abs(records[1:, :overlap] - records[:-1, RECORD_STRIDE:]).reshape(n_records - 1, -1)
        per_record = np.where(np.isnan(diff), 0.0, diff).max(axis=1)
        max_diff = float(per_record.max())
        if max_diff > atol:
            bad = int(np.argmax(per_record > atol)) + 1
            raise UserError(f"{where}: record {bad + 1} (year row {first_row + bad}) disagrees with record {bad} "
                            f"on their {overlap} shared months by up to {per_record[bad - 1]:.3g} "
                            f"(> dataset.overlap_atol={atol:g}); the file is not 12-month-stride windows of one "
                            f"run per model; re-download it or check the model counts")
    series = np.full((series_length(n_records), *records.shape[2:]), np.nan, dtype=np.float32)
    for block in range(RECORD_MONTHS // RECORD_STRIDE):
        start = block * RECORD_STRIDE
        # a view: block k of record r is month 12r + 12k of the series
        view = series[start:start + RECORD_STRIDE * n_records]
        view = view.reshape(n_records, RECORD_STRIDE, *records.shape[2:])
        np.copyto(view, records[:, start:start + RECORD_STRIDE], where=np.isnan(view))
    return series, max_diff


class EnsoArchive:
    """Reads models' folded series from one root; opens each file once and closes on `close()`."""

    def __init__(self, root: Path, counts: dict[str, tuple[int, int]], lon_range: tuple[float, float],
                 height: int, width: int, overlap_atol: float):
        self.root = Path(root)
        self.counts = counts  # group -> (models, records per model) for cmip6 / cmip5
        self.lon_range = lon_range
        self.height, self.width = height, width
        self.overlap_atol = overlap_atol
        self._open: dict[str, tuple[xr.Dataset, xr.Dataset, slice]] = {}

    def open_source(self, source: str) -> tuple[xr.Dataset, xr.Dataset, slice]:
        if source in self._open:
            return self._open[source]
        if not self.root.is_dir():
            raise UserError(f"dataset.root {self.root} does not exist; download ICAR-ENSO there "
                            f"(see data/README.md), set paths.data_root, or use dataset=enso_synth")
        train_name, label_name = SOURCE_FILES[source]
        sst_ds = open_checked(self.root / train_name, "sst", SST_DIMS)
        label_ds = open_checked(self.root / label_name, "nino", LABEL_DIMS)
        n_rows = sst_ds.sizes["year"]
        if label_ds.sizes["year"] != n_rows:
            raise UserError(f"{self.root / label_name}: {label_ds.sizes['year']} year rows but {train_name} has "
                            f"{n_rows}; the two files must come from the same release")
        if source == "cmip":
            expected = sum(models * records for models, records in self.counts.values())
            if n_rows != expected:
                terms = " + ".join(f"{m}×{r}" for m, r in self.counts.values())
                raise UserError(f"{self.root / train_name}: year dimension has {n_rows} rows but dataset."
                                f"n_cmip6_models×cmip6_records + n_cmip5_models×cmip5_records = {terms} = "
                                f"{expected}; set those counts to match the file")
        if sst_ds.sizes["lat"] != self.height:
            raise UserError(f"{self.root / train_name}: {sst_ds.sizes['lat']} latitudes but dataset.height is "
                            f"{self.height}; fix dataset.height or the file")
        lon = np.mod(sst_ds["lon"].values.astype(np.float64), 360.0)
        keep = np.flatnonzero((lon >= self.lon_range[0] - 1e-6) & (lon <= self.lon_range[1] + 1e-6))
        if keep.size != self.width or (keep.size and np.any(np.diff(keep) != 1)):
            raise UserError(f"{self.root / train_name}: dataset.lon_range {list(self.lon_range)} keeps "
                            f"{keep.size} contiguous longitudes but dataset.width is {self.width}; expected the "
                            f"5° grid lon 0…355")
        self._open[source] = (sst_ds, label_ds, slice(int(keep[0]), int(keep[-1]) + 1))
        return self._open[source]

    def slots(self, group: str) -> list[ModelSlot]:
        if group == "soda":
            n_rows = self.open_source("soda")[0].sizes["year"]
            return [ModelSlot("soda", 1, 0, n_rows)]
        first_row = 0
        for name, (models, records) in self.counts.items():
            if name == group:
                return [ModelSlot(group, i + 1, first_row + i * records, records) for i in range(models)]
            first_row += models * records
        raise UserError(f"unknown ENSO model group {group!r}; use one of {', '.join(GROUPS)}")

    def read(self, slot: ModelSlot) -> ModelSeries:
        sst_ds, label_ds, lon_slice = self.open_source(source_of(slot.group))
        rows = slice(slot.first_row, slot.first_row + slot.n_records)
        train_name, label_name = SOURCE_FILES[source_of(slot.group)]
        records = sst_ds["sst"].isel(year=rows, lon=lon_slice).values.astype(np.float32, copy=False)
        atol, where = self.overlap_atol, f"model {slot.name}"
        sst, sst_diff = fold_records(records, atol, f"{self.root / train_name} {where}", slot.first_row)
        del records
        labels = label_ds["nino"].isel(year=rows).values.astype(np.float32, copy=False)
        nino, nino_diff = fold_records(labels, atol, f"{self.root / label_name} {where}", slot.first_row)
        sst_nan = int(np.isnan(sst).sum())
        if sst_nan:
            # the published pipeline reads missing SST as a 0 °C anomaly; say so, since it also hides bad files
            log.warning("%s %s: %d NaN SST values (%.2f%%) read as 0 °C anomaly", self.root / train_name, where,
                        sst_nan, 100.0 * sst_nan / sst.size)
            np.nan_to_num(sst, copy=False, nan=0.0)
        return ModelSeries(slot, sst, nino, sst_ds["lat"].values.astype(np.float32),
                           sst_ds["lon"].values[lon_slice].astype(np.float32), sst_nan, int(np.isnan(nino).sum()),
                           (sst_diff, nino_diff))

    def close(self) -> None:
        for sst_ds, label_ds, _ in self._open.values():
            sst_ds.close()
            label_ds.close()
        self._open.clear()
