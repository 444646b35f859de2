"""ICAR-ENSO reader: monthly SST anomalies of CMIP5/6 runs (and SODA) as 12 → 14-month forecasting samples.

Layout (Tianchi "AI Earth" 2021, data/README.md): `CMIP_train.nc` holds `sst` (and t300/ua/va, never
read) as year × month × lat × lon = 4645 × 36 × 24 × 72 on a 5° grid (lat −55…60, lon 0…355);
`CMIP_label.nc` holds `nino` as year × month. Rows are 15 CMIP6 models × 151 records, then 17 CMIP5 models × 140 records. Record r of
a model covers months 12r … 12r+35 of one continuous run (each record starts in January), so consecutive
records share 24 months. We fold the records back into one series per model (12·(R−1)+36 months), checking
that the shared months agree, and cut windows from it that never cross models. `SODA_train.nc` /
`SODA_label.nc` have the same layout with one "model" and are read only when a split names `soda`.

Conventions:
  - longitudes 95°E…330°E are kept (48 columns) by coordinate value: the tropical Pacific basin;
  - `init_month` is the calendar month (1–12) of the first *target* month; series month t is calendar month
    t mod 12 + 1 because every record starts in January;
  - `nino_target` are the label file's values for the 14 target months. The label at month m is the
    3-month running mean of the Nino3.4 box starting at m (mean of m, m+1, m+2), the convention under which
    the 14 forecast months give 12 lead-time indices; `earthcast data check` reports which convention fits;
  - SST is scaled to [0, 1] with the min/max of the training split (`norm_stats`, stored in checkpoints
    through state_dict); `to_physical` gives °C anomalies back. NaN SST (some real files have a few) is
    replaced by 0 °C anomaly and counted in `describe()["sst_nan_filled"]`.

Memory: the folded series are held in RAM as float32. Real data: 15 × 1836 + 17 × 1704 = 56,508 months ×
24 × 48 × 4 B ≈ 260 MB (plus SODA, 1224 months ≈ 6 MB); reading peaks at one more model's records
(151 × 36 × 24 × 48 × 4 B ≈ 25 MB). The file handles are closed after loading, so workers fork safely.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from lightning import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from earthcast.data.base import DATASETS, evaluation_sampler
from earthcast.errors import UserError

RECORD_MONTHS = 36
RECORD_STRIDE = 12
SST_DIMS = ("year", "month", "lat", "lon")
LABEL_DIMS = ("year", "month")
#: Nino3.4 box: 5°S–5°N, 170°W–120°W in degrees east
NINO34_LAT = (-5.0, 5.0)
NINO34_LON = (190.0, 240.0)
GROUPS = ("cmip6", "cmip5", "soda")
SOURCE_FILES = {"cmip": ("CMIP_train.nc", "CMIP_label.nc"), "soda": ("SODA_train.nc", "SODA_label.nc")}
#: splits Lightning asks for in each stage
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


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


def plain_config(cfg: Any) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


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
            np.nan_to_num(sst, copy=False, nan=0.0)
        return ModelSeries(slot, sst, nino, sst_ds["lat"].values.astype(np.float32),
                           sst_ds["lon"].values[lon_slice].astype(np.float32), sst_nan, int(np.isnan(nino).sum()),
                           (sst_diff, nino_diff))

    def close(self) -> None:
        for sst_ds, label_ds, _ in self._open.values():
            sst_ds.close()
            label_ds.close()
        self._open.clear()


def parse_splits(splits: Any, n_models: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """`dataset.splits` → {split: [(group, model number), ...]}.

    Each split is a group name ("soda", "cmip5": all its models) or a mapping group → [first, last]
    (1-based, inclusive), a single model number, or "all".
    """
    if not isinstance(splits, dict) or not splits:
        raise UserError("dataset.splits must map split names to model groups, e.g. {train: {cmip6: [1, 15], "
                        "cmip5: [1, 15]}, val: {cmip5: [16, 16]}, test: {cmip5: [17, 17]}}")
    parsed: dict[str, list[tuple[str, int]]] = {}
    for split, spec in splits.items():
        spec = {spec: "all"} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or not spec:
            raise UserError(f"dataset.splits.{split} must be a group name or a mapping like {{cmip5: [16, 16]}}")
        models: list[tuple[str, int]] = []
        for group, span in spec.items():
            key = f"dataset.splits.{split}.{group}"
            if group not in GROUPS:
                raise UserError(f"{key}: unknown model group; use one of {', '.join(GROUPS)}")
            available = n_models[group]
            if span == "all":
                span = [1, available]
            elif isinstance(span, int) and not isinstance(span, bool):
                span = [span, span]
            if (not isinstance(span, list | tuple) or len(span) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
                    or not 1 <= span[0] <= span[1] <= available):
                raise UserError(f"{key} = {span!r}: give [first, last] model numbers within 1…{available} "
                                f"(inclusive), a single number, or 'all'")
            models += [(group, number) for number in range(span[0], span[1] + 1)]
        parsed[split] = models
    return parsed


class EnsoWindows(Dataset):
    """Every window of in_len + out_len consecutive months (step `stride`) inside each model's series."""

    def __init__(self, series: list[ModelSeries], in_len: int, out_len: int, stride: int,
                 sst_min: float, sst_max: float):
        self.series = series
        self.in_len, self.out_len = in_len, out_len
        self.offset, self.scale = sst_min, 1.0 / (sst_max - sst_min)
        window = in_len + out_len
        self.index = np.array([(i, start) for i, s in enumerate(series)
                               for start in range(0, count_windows(len(s.sst), window, stride) * stride, stride)],
                              dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict:
        which, start = (int(v) for v in self.index[item])
        s = self.series[which]
        first_target = start + self.in_len
        stop = first_target + self.out_len
        frames = torch.from_numpy((s.sst[start:stop] - self.offset) * self.scale).unsqueeze(-1)
        return {
            "inputs": frames[:self.in_len].float(),
            "targets": frames[self.in_len:].float(),
            "lat": torch.from_numpy(s.lat),
            "lon": torch.from_numpy(s.lon),
            "init_month": first_target % 12 + 1,
            "seq_start": start,
            "model": s.slot.name,
            "nino_target": torch.from_numpy(s.nino[first_target:stop]),
        }


class EnsoDataModule(LightningDataModule):
    """ICAR-ENSO as a LightningDataModule; see the module docstring for layout and conventions."""

    def __init__(self, cfg_dataset: Any):
        super().__init__()
        cfg = plain_config(cfg_dataset)
        self.cfg = cfg
        self.name = str(cfg.get("name", "enso"))
        self.in_len, self.out_len = int(cfg.get("in_len", 12)), int(cfg.get("out_len", 14))
        self.window_stride = int(cfg.get("window_stride", 1))
        if min(self.in_len, self.out_len, self.window_stride) < 1:
            raise UserError("dataset.in_len, dataset.out_len and dataset.window_stride must be ≥ 1")
        self.batch_size = int(cfg.get("batch_size", 32))
        self.eval_batch_size = int(cfg.get("eval_batch_size") or self.batch_size)
        self.num_workers = int(cfg.get("num_workers", 0))
        self.seed = int(cfg.get("seed") or 0)
        self.predict_split = str(cfg.get("predict_split") or "test")
        if cfg.get("root") in (None, ""):
            raise UserError("dataset.root is not set; set paths.data_root=<dir> or EARTHCAST_DATA_ROOT")
        counts = {group: (int(cfg.get(f"n_{group}_models", models)), int(cfg.get(f"{group}_records", records)))
                  for group, models, records in (("cmip6", 15, 151), ("cmip5", 17, 140))}
        for group, (models, records) in counts.items():
            if models < 0 or records < 1:
                raise UserError(f"dataset.n_{group}_models must be ≥ 0 and dataset.{group}_records ≥ 1")
        lon_range = tuple(float(v) for v in cfg.get("lon_range", (95.0, 330.0)))
        self.archive = EnsoArchive(Path(cfg["root"]), counts, lon_range, int(cfg.get("height", 24)),
                                   int(cfg.get("width", 48)), float(cfg.get("overlap_atol", 1e-3)))
        self.splits = parse_splits(cfg.get("splits"), {"cmip6": counts["cmip6"][0], "cmip5": counts["cmip5"][0],
                                                       "soda": 1})
        train = set(self.splits.get("train", []))
        for split in ("val", "test"):
            shared = sorted(train & set(self.splits.get(split, [])))
            if shared:
                names = ", ".join(f"{g.upper()}-{n}" for g, n in shared)
                raise UserError(f"dataset.splits.train and dataset.splits.{split} share models ({names}); "
                                f"evaluation on training models leaks — make the ranges disjoint")
        self._norm = self._config_norm(cfg.get("norm") or {})
        self._series: dict[tuple[str, int], ModelSeries] = {}
        self._slots: dict[str, list[ModelSlot]] = {}

    @staticmethod
    def _config_norm(norm: dict) -> dict[str, float] | None:
        low, high = norm.get("sst_min"), norm.get("sst_max")
        if low is None and high is None:
            return None
        if low is None or high is None or not float(high) > float(low):
            raise UserError("dataset.norm.sst_min and dataset.norm.sst_max must both be null (computed from the "
                            "train split) or both set with sst_max > sst_min")
        return {"sst_min": float(low), "sst_max": float(high)}

    # ---- loading ---------------------------------------------------------------------------------------
    def _slot(self, group: str, number: int) -> ModelSlot:
        if group not in self._slots:
            self._slots[group] = self.archive.slots(group)
        return self._slots[group][number - 1]

    def _split_models(self, split: str) -> list[tuple[str, int]]:
        if split not in self.splits:
            raise UserError(f"dataset.splits has no {split!r} split (have: {', '.join(self.splits)}); add it, "
                            f"e.g. dataset.splits.{split}={{cmip5:[17,17]}}")
        return self.splits[split]

    def _load(self, splits: list[str]) -> None:
        wanted = [key for split in splits for key in self._split_models(split) if key not in self._series]
        wanted = list(dict.fromkeys(wanted))
        if not wanted:
            return
        try:
            with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
                task = progress.add_task(f"reading ENSO from {self.archive.root}", total=len(wanted))
                for key in wanted:
                    self._series[key] = self.archive.read(self._slot(*key))
                    progress.advance(task)
        finally:
            self.archive.close()  # no open handles when dataloader workers fork

    def setup(self, stage: str | None = None) -> None:
        splits = list(STAGE_SPLITS.get(stage, ())) if stage != "predict" else [self.predict_split]
        if stage is None:
            splits = [s for s in ("train", "val", "test", self.predict_split) if s in self.splits]
        self._load(splits)

    def series(self, split: str) -> list[ModelSeries]:
        self._load([split])
        return [self._series[key] for key in self._split_models(split)]

    # ---- normalisation ---------------------------------------------------------------------------------
    @property
    def norm_stats(self) -> dict[str, float]:
        """SST min/max of the training split (or from the config / a checkpoint), in °C."""
        if self._norm is None:
            train = self.series("train")
            self._norm = {"sst_min": float(min(s.sst.min() for s in train)),
                          "sst_max": float(max(s.sst.max() for s in train))}
            if not self._norm["sst_max"] > self._norm["sst_min"]:
                raise UserError(f"the train split of {self.archive.root} has constant SST; check the files")
        return dict(self._norm)

    def normalize(self, x):
        stats = self.norm_stats
        return (x - stats["sst_min"]) / (stats["sst_max"] - stats["sst_min"])

    def to_physical(self, x):
        """Normalised SST → °C anomaly (tensor or array)."""
        stats = self.norm_stats
        return x * (stats["sst_max"] - stats["sst_min"]) + stats["sst_min"]

    def state_dict(self) -> dict[str, float]:
        return self.norm_stats

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        if "sst_min" in state_dict and "sst_max" in state_dict:
            self._norm = self._config_norm(dict(state_dict))

    # ---- loaders ---------------------------------------------------------------------------------------
    def dataset(self, split: str) -> EnsoWindows:
        stats = self.norm_stats  # resolved here, after any checkpoint restore, never baked in at setup
        windows = EnsoWindows(self.series(split), self.in_len, self.out_len, self.window_stride,
                              stats["sst_min"], stats["sst_max"])
        if len(windows) == 0:
            raise UserError(f"dataset.splits.{split} yields no samples: its series are shorter than "
                            f"in_len + out_len = {self.in_len + self.out_len} months")
        return windows

    def _loader(self, split: str, train: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if train else None
        dataset = self.dataset(split)
        return DataLoader(dataset, batch_size=self.batch_size if train else self.eval_batch_size,
                          shuffle=train, sampler=None if train else evaluation_sampler(dataset),
                          generator=generator, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, train=False)

    # ---- reporting -------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """Facts for reports; needs only file headers unless SST was already loaded."""
        window = self.in_len + self.out_len
        models, samples = {}, {}
        for split, keys in self.splits.items():
            slots = [self._slot(*key) for key in keys]
            models[split] = [slot.name for slot in slots]
            samples[split] = sum(count_windows(slot.length, window, self.window_stride) for slot in slots)
        self.archive.close()
        loaded = self._series.values()
        first = next(iter(loaded), None)
        lon = [float(first.lon[0]), float(first.lon[-1])] if first else list(self.archive.lon_range)
        return {
            "name": self.name,
            "root": str(self.archive.root),
            "frame_minutes": None,
            "frame_interval": "1 month",
            "in_len": self.in_len,
            "out_len": self.out_len,
            "grid": {"height": self.archive.height, "width": self.archive.width, "resolution_deg": 5.0,
                     "lat": [float(first.lat[0]), float(first.lat[-1])] if first else None,
                     "lon": lon},
            "models": models,
            "samples": samples,
            "predict_split": self.predict_split,
            "norm": dict(self._norm) if self._norm else None,
            "sst_nan_filled": sum(s.sst_nan for s in loaded),
            "nino_nan": sum(s.nino_nan for s in loaded),
            "memory_mb": math.fsum(s.sst.nbytes for s in loaded) / 2**20,
        }


@DATASETS.register("enso")
def build_enso_datamodule(cfg_dataset: Any) -> EnsoDataModule:
    return EnsoDataModule(cfg_dataset)
