"""ICAR-ENSO reader: the models' monthly SST anomaly series as 12 → 14-month forecasting samples.

Series come from earthcast.data.enso.archive; windows are cut from them and never cross models.
Conventions:
  - longitudes 95°E…330°E are kept (48 columns) by coordinate value: the tropical Pacific basin;
  - `init_month` is the calendar month (1–12) of the first *target* month; series month t is calendar month
    t mod 12 + 1 because every record starts in January;
  - `nino_target` are the label file's values for the 14 target months. The label at month m is the
    3-month running mean of the Nino3.4 box starting at m (mean of m, m+1, m+2), the convention under which
    the 14 forecast months give 12 lead-time indices; `earthcast data check` reports which convention fits;
  - SST is scaled to [0, 1] with the min/max of the training split (`norm_stats`, stored in checkpoints
    through state_dict); `units` gives °C anomalies back. NaN SST (some real files have a few) is
    replaced by 0 °C anomaly and counted in `describe()["sst_nan_filled"]`.

Memory: the folded series are held in RAM as float32. Real data: 15 × 1836 + 17 × 1704 = 56,508 months ×
24 × 48 × 4 B ≈ 260 MB (plus SODA, 1224 months ≈ 6 MB); reading peaks at one more model's records
(151 × 36 × 24 × 48 × 4 B ≈ 25 MB). The file handles are closed after loading, so workers fork safely.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import Dataset

from earthcast.data.base import DATASETS, ForecastDataModule, ForecastLayout, PhysicalUnits
from earthcast.data.enso.archive import GROUPS, EnsoArchive, ModelSeries, ModelSlot, count_windows
from earthcast.errors import UserError


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


class EnsoDataModule(ForecastDataModule):
    """ICAR-ENSO as a LightningDataModule; see the module docstring for layout and conventions."""

    def __init__(self, cfg: dict, split: str | None = None):
        super().__init__(cfg, split)
        self.in_len, self.out_len = int(cfg["in_len"]), int(cfg["out_len"])
        self.window_stride = int(cfg["window_stride"])
        if min(self.in_len, self.out_len, self.window_stride) < 1:
            raise UserError("dataset.in_len, dataset.out_len and dataset.window_stride must be ≥ 1")
        if cfg["root"] in (None, ""):
            raise UserError("dataset.root is not set; set paths.data_root=<dir> or EARTHCAST_DATA_ROOT")
        counts = {group: (int(cfg[f"n_{group}_models"]), int(cfg[f"{group}_records"])) for group in ("cmip6", "cmip5")}
        for group, (models, records) in counts.items():
            if models < 0 or records < 1:
                raise UserError(f"dataset.n_{group}_models must be ≥ 0 and dataset.{group}_records ≥ 1")
        lon_range = tuple(float(v) for v in cfg["lon_range"])
        self.archive = EnsoArchive(Path(cfg["root"]), counts, lon_range, int(cfg["height"]), int(cfg["width"]),
                                   float(cfg["overlap_atol"]))
        self.splits = parse_splits(cfg["splits"], {"cmip6": counts["cmip6"][0], "cmip5": counts["cmip5"][0],
                                                   "soda": 1})
        train = set(self.splits.get("train", []))
        for split in ("val", "test"):
            shared = sorted(train & set(self.splits.get(split, [])))
            if shared:
                names = ", ".join(f"{g.upper()}-{n}" for g, n in shared)
                raise UserError(f"dataset.splits.train and dataset.splits.{split} share models ({names}); "
                                f"evaluation on training models leaks — make the ranges disjoint")
        self._norm = self._config_norm(cfg["norm"] or {})
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

    def load_split(self, split: str) -> None:
        """Read the split's series (the windows are cut later, once the normalisation is final)."""
        wanted = [key for key in self._split_models(split) if key not in self._series]
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

    def series(self, split: str) -> list[ModelSeries]:
        self.load_split(split)
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

    @property
    def units(self) -> PhysicalUnits:
        """Normalised SST → °C anomaly: an affine map, so differences scale by (max − min) alone."""
        stats = self.norm_stats
        return PhysicalUnits(scale=stats["sst_max"] - stats["sst_min"], offset=stats["sst_min"])

    def state_dict(self) -> dict:
        return {**super().state_dict(), **self.norm_stats}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
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

    def forecast_layout(self) -> ForecastLayout:
        """lat/lon come with every batch; leads are calendar months."""
        return ForecastLayout(grid=("lat", "lon"), lead_units="month",
                              variable={"units": "K", "long_name": "sea surface temperature anomaly"})

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


DATASETS.register("enso")(EnsoDataModule)
