"""`dataset=gridded`: forecasting windows from any gridded netCDF/Zarr store (configs/dataset/gridded.yaml).

A window is in_len + out_len consecutive frames, one every `stride` frames; it belongs to a split when all of
its frames fall in the split's date range [start, end). Frames must be evenly spaced: a time axis with gaps
is refused unless `allow_gaps` (then windows that would cross a gap are skipped; `earthcast data check`
lists the gaps).

Normalisation: (value − mean) / std with the mean and standard deviation of the training split's valid points
(at most `norm_max_frames` frames, evenly spaced), or the values the config gives; they are the datamodule's
state, saved in every checkpoint, so eval and predict use the training run's numbers.

Masking: points where the variable is NaN (e.g. SST over land), and points that `mask.variable` (a static
y × x variable of the store, e.g. a land–sea mask) marks, are left out of the loss and the scores: each batch
carries `mask` (True where a target point counts), the inputs hold 0 (the training mean) there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from earthcast.data.base import DATASETS, SPLITS, ForecastDataModule, ForecastLayout, PhysicalUnits
from earthcast.data.gridded.store import GriddedStore, duration, gaps, time_step
from earthcast.errors import UserError


def parse_date_splits(splits: Any) -> dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None]]:
    """{split: [start, end]} (dates, null for an open side) → half-open [start, end) ranges."""
    ranges = {}
    for split in SPLITS:
        bounds = splits.get(split) if isinstance(splits, dict) else None
        if bounds is None or len(bounds) != 2:
            raise UserError(f"dataset.splits.{split} must be [start, end] dates (null for an open side), e.g. "
                            f"[null, '2019-01-01']")
        try:
            ranges[split] = tuple(None if b is None else pd.Timestamp(str(b)) for b in bounds)
        except ValueError:
            raise UserError(f"dataset.splits.{split}: {list(bounds)} are not dates like '2019-01-01'") from None
    return ranges


def in_range(times: pd.DatetimeIndex, bounds: tuple) -> np.ndarray:
    start, end = bounds
    keep = np.ones(len(times), dtype=bool)
    if start is not None:
        keep &= times >= start
    if end is not None:
        keep &= times < end
    return keep


class GriddedWindows(Dataset):
    """Windows starting at `starts` of a GriddedStore, normalised, with the mask of their target points."""

    def __init__(self, store: GriddedStore, starts: np.ndarray, in_len: int, out_len: int, mean: float,
                 std: float, static_valid: np.ndarray | None):
        self.store, self.starts = store, np.asarray(starts, dtype=np.int64)
        self.in_len, self.out_len, self.mean, self.std = in_len, out_len, mean, std
        self.static_valid = static_valid

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start = int(self.starts[index])
        frames = self.store.frames(start, start + self.in_len + self.out_len)
        valid = np.isfinite(frames)
        if self.static_valid is not None:
            valid &= self.static_valid
        x = torch.from_numpy(np.where(valid, (frames - self.mean) / self.std, 0.0).astype(np.float32)).unsqueeze(-1)
        init_time = self.store.times[start + self.in_len - 1]
        return {"inputs": x[:self.in_len], "targets": x[self.in_len:],
                "mask": torch.from_numpy(valid[self.in_len:]).unsqueeze(-1),
                "init_time": init_time.isoformat()}


class GriddedDataModule(ForecastDataModule):
    """A gridded store as a LightningDataModule; see the module docstring and configs/dataset/gridded.yaml."""

    def __init__(self, cfg: dict, split: str | None = None):
        super().__init__(cfg, split)
        self.in_len, self.out_len, self.stride = int(cfg["in_len"]), int(cfg["out_len"]), int(cfg["stride"])
        if min(self.in_len, self.out_len, self.stride) < 1:
            raise UserError("dataset.in_len, dataset.out_len and dataset.stride must be ≥ 1")
        if int(cfg["channels"]) != 1:
            raise UserError(f"dataset.channels={cfg['channels']}: dataset=gridded forecasts one variable; set "
                            f"dataset.channels=1")
        for key in ("path", "variable"):
            if cfg.get(key) in (None, "", "???"):
                raise UserError(f"dataset.{key} is not set; give dataset.{key}=... (data/README.md, 'Your own "
                                f"gridded data')")
        if cfg["predict_split"] not in SPLITS:
            raise UserError(f"dataset.predict_split={cfg['predict_split']!r}; use one of {', '.join(SPLITS)}")
        self.ranges = parse_date_splits(cfg["splits"])
        mask = cfg["mask"] or {}
        self.mask_variable, self.mask_invert = mask.get("variable"), bool(mask.get("invert"))
        norm = cfg["norm"] or {}
        self._norm = None
        if norm.get("mean") is not None or norm.get("std") is not None:
            self._norm = self._checked_norm({"mean": norm.get("mean"), "std": norm.get("std")})
        self._store: GriddedStore | None = None
        self.trained_step: pd.Timedelta | None = None  # from a checkpoint: the interval forecasts assume
        self._windows: dict[str, GriddedWindows] = {}

    # -- the store ----------------------------------------------------------------------------------------
    @property
    def store(self) -> GriddedStore:
        if self._store is None:
            cfg = self.cfg
            self._store = GriddedStore(cfg["path"], str(cfg["variable"]), str(cfg["time_dim"]), list(cfg["dims"]),
                                       cfg["select"], int(cfg["chunk_frames"]), int(cfg["cache_chunks"]))
            self.step = time_step(self._store.times, self.cfg["time_step"])
            self._check_grid()
        return self._store

    def _check_grid(self) -> None:
        height, width = self._store.shape
        wanted = (self.cfg["height"], self.cfg["width"])
        if wanted != (height, width):
            raise UserError(f"dataset.height/width are {wanted[0]}×{wanted[1]} but {self.cfg['variable']} in "
                            f"{self.cfg['path']} is {height}×{width} on {list(self._store.dims)} (after "
                            f"dataset.select); set dataset.height={height} dataset.width={width}")

    def gaps(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        return gaps(self.store.times, self.step)

    def window_starts(self, split: str) -> np.ndarray:
        """First frames of the split's windows: every stride-th start whose frames are evenly spaced (with
        allow_gaps; without it a gap anywhere is an error) and inside the split's dates."""
        times, length = self.store.times, self.in_len + self.out_len
        found = self.gaps()
        if found and not self.cfg["allow_gaps"]:
            before, after = found[0]
            raise UserError(f"{self.cfg['path']}: the time axis has {len(found)} gap(s), the first between "
                            f"{before} and {after} (step {duration(self.step)}); fill them, or set dataset.allow_gaps=true "
                            f"to skip windows that cross one (earthcast data check lists them)")
        if len(times) < length:
            return np.zeros(0, dtype=np.int64)
        even = np.diff(times.values) == self.step.to_timedelta64()
        # windows of `length` frames with length − 1 even steps: a running count over the step flags
        running = np.concatenate([[0], np.cumsum(even)])
        starts = np.arange(0, len(times) - length + 1)
        unbroken = running[starts + length - 1] - running[starts] == length - 1
        inside = in_range(times, self.ranges[split])
        inside_run = np.concatenate([[0], np.cumsum(inside)])
        covered = inside_run[starts + length] - inside_run[starts] == length
        chosen = starts[unbroken & covered]
        return chosen[(chosen - chosen[0]) % self.stride == 0] if len(chosen) else chosen

    def static_valid(self) -> np.ndarray | None:
        if not self.mask_variable:
            return None
        values = self.store.static(str(self.mask_variable))
        keep = np.isfinite(values) & (values != 0)
        return ~keep & np.isfinite(values) if self.mask_invert else keep

    # -- normalisation ------------------------------------------------------------------------------------
    @staticmethod
    def _checked_norm(norm: dict) -> dict[str, float]:
        mean, std = norm.get("mean"), norm.get("std")
        if mean is None or std is None or not float(std) > 0 or not math.isfinite(float(mean)):
            raise UserError("dataset.norm.mean and dataset.norm.std must both be null (fitted on the train split) "
                            "or both set, with std > 0")
        return {"mean": float(mean), "std": float(std)}

    @property
    def norm_stats(self) -> dict[str, float]:
        if self._norm is None:
            self._norm = self._fit_norm()
        return dict(self._norm)

    def _fit_norm(self) -> dict[str, float]:
        starts = self.window_starts("train")
        if len(starts) == 0:
            raise UserError(f"dataset.splits.train {self._range_text('train')} holds no window of "
                            f"{self.in_len + self.out_len} frames; widen it")
        frames = np.unique(np.concatenate([starts + k for k in range(self.in_len + self.out_len)]))
        budget = int(self.cfg["norm_max_frames"])
        if len(frames) > budget:
            frames = frames[np.linspace(0, len(frames) - 1, budget).round().astype(int)]
        static = self.static_valid()
        total = np.zeros(3)
        for frame in frames:
            values = self.store.read(int(frame), int(frame) + 1)[0].astype(np.float64)  # uncached: scattered frames
            valid = np.isfinite(values) if static is None else np.isfinite(values) & static
            chosen = values[valid]
            total += (chosen.size, chosen.sum(), np.square(chosen).sum())
        if total[0] == 0:
            raise UserError(f"{self.cfg['variable']} has no valid values in the train split; check the mask")
        mean = total[1] / total[0]
        std = math.sqrt(max(total[2] / total[0] - mean**2, 0.0))
        if not std > 0:
            raise UserError(f"{self.cfg['variable']} is constant over the train split; nothing to forecast")
        return {"mean": float(mean), "std": float(std)}

    def state_dict(self) -> dict[str, float]:
        """The normalisation and the frame interval (in minutes) the model was trained on."""
        self.store  # noqa: B018 - the frame interval
        return {**self.norm_stats, "step_minutes": self.step / pd.Timedelta(minutes=1)}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        if "mean" in state_dict and "std" in state_dict:
            self._norm = self._checked_norm(dict(state_dict))
        if state_dict.get("step_minutes"):
            self.trained_step = pd.Timedelta(minutes=float(state_dict["step_minutes"]))

    @property
    def units(self) -> PhysicalUnits:
        stats = self.norm_stats
        return PhysicalUnits(scale=stats["std"], offset=stats["mean"])

    # -- loaders ------------------------------------------------------------------------------------------
    def _range_text(self, split: str) -> str:
        start, end = self.ranges[split]
        return f"[{start or '…'}, {end or '…'})"

    def dataset(self, split: str) -> GriddedWindows:
        if split not in self._windows:
            starts = self.window_starts(split)
            if len(starts) == 0:
                raise UserError(f"dataset.splits.{split} {self._range_text(split)} holds no window of "
                                f"{self.in_len + self.out_len} evenly spaced frames in {self.cfg['path']} "
                                f"({self.store.times[0]} … {self.store.times[-1]}); widen it")
            stats = self.norm_stats
            self._windows[split] = GriddedWindows(self.store, starts, self.in_len, self.out_len, stats["mean"],
                                                  stats["std"], self.static_valid())
        return self._windows[split]

    def teardown(self, stage: str | None = None) -> None:
        if self._store is not None:
            self._store.close()

    # -- reporting ----------------------------------------------------------------------------------------
    def forecast_layout(self) -> ForecastLayout:
        store = self.store
        return ForecastLayout(grid=store.dims, coords=dict(store.coords), frame=self.step,
                              variable={"name": store.variable, **store.attrs},
                              attrs={"source_path": str(self.cfg["path"])})

    def describe(self) -> dict[str, Any]:
        store = self.store
        return {"name": self.name, "path": str(self.cfg["path"]), "variable": store.variable,
                "dims": [store.time_dim, *store.dims], "grid": list(store.shape), "time_step": str(self.step),
                "in_len": self.in_len, "out_len": self.out_len, "stride": self.stride,
                "norm": dict(self._norm) if self._norm else None,
                "splits": {split: {"range": self._range_text(split), "samples": len(self.window_starts(split))}
                           for split in SPLITS}}


DATASETS.register("gridded")(GriddedDataModule)
