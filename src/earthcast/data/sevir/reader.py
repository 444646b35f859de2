"""SEVIR and SEVIR-LR VIL readers: catalog filtering, date splits, lazy HDF5 sequences, LightningDataModule.

Layout of a root (real data or a synthetic twin, see data/README.md):
    <root>/CATALOG.csv                       one row per (event, sensor)
    <root>/data/vil/<year>/SEVIR_VIL_*.h5    dataset "vil": uint8 N × H × W × T, dataset "id": bytes N
An event is located by (file_name, file_index); file_name is relative to <root>/data.

Shuffling: the train loader draws each epoch's order from (seed, epoch) (earthcast.data.loaders), so a resumed
run reads what an uninterrupted one would; under DDP Lightning's DistributedSampler takes over, which is why
the dataset stays map-style and builds no sampler of its own. A datamodule built for evaluation never
augments, even on the train split.

HDF5 handles are opened lazily inside whichever process reads (each DataLoader worker opens its own) and are
cached per process id, so a handle is never shared across fork.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from earthcast.data.base import DATASETS, SPLITS, ForecastDataModule, ForecastLayout, PhysicalUnits
from earthcast.errors import UserError

#: the catalog columns the reader relies on (the real catalog has more; see sevir_synth.CATALOG_COLUMNS)
REQUIRED_COLUMNS = ("id", "file_name", "file_index", "img_type", "time_utc", "event_type", "pct_missing")
#: the catalog's patch corners (degrees), written beside each stored forecast
CORNER_COLUMNS = ("llcrnrlat", "llcrnrlon", "urcrnrlat", "urcrnrlon")
#: side of a SEVIR patch in km (384 pixels of 1 km; SEVIR-LR: 128 of 3 km)
PATCH_KM = 384.0
#: pixel value → model scale, float32(v) / 255 exactly as a division would give
_SCALED_VALUES = np.arange(256, dtype=np.float32) / np.float32(255.0)


# ----------------------------------------------------------------------------------------------- catalog


#: what to do about a missing file of a synthetic twin (never a download: the twin is generated)
REGENERATE = "the synthetic twin is incomplete: regenerate it with `earthcast data synth force=true`"


def read_catalog(root: str | Path, key: str = "dataset.root", synthetic: bool = False) -> pd.DataFrame:
    """CATALOG.csv of a SEVIR root, checked for the columns the reader needs; `key` names the setting that
    gave the root, `synthetic` whether it is a twin (whose missing files are regenerated, not downloaded)."""
    root = Path(root)
    if not root.is_dir():
        where = ("dataset.root (or paths.data_root)" if key == "dataset.root" else key)
        raise UserError(f"SEVIR root {root} does not exist; set {where} to the directory holding CATALOG.csv and "
                        f"data/vil{', or generate a twin with `earthcast data synth`' if key == 'dataset.root' else ''}")
    path = root / "CATALOG.csv"
    if not path.is_file():
        raise UserError(f"{path} is missing; " + (REGENERATE if synthetic else
                        f"download it with `aws s3 cp --no-sign-request s3://sevir/CATALOG.csv {path}`"))
    try:
        catalog = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a readable CSV ({err}); download it again") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in catalog.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; it must be the SEVIR CATALOG.csv "
                        f"(columns {', '.join(REQUIRED_COLUMNS)}, ...)")
    return catalog


def select_vil_events(catalog: pd.DataFrame, max_pct_missing: float = 0.0,
                      source: str = "CATALOG.csv") -> tuple[pd.DataFrame, dict[str, int]]:
    """VIL rows usable for training: one row per event id, with at most `max_pct_missing` % missing pixels.

    Ids with more than one VIL row are dropped entirely (counted among all VIL rows, before the missing-data
    filter) because which row is right is ambiguous. Returns the events sorted by time and counts of what was
    dropped, for reports.
    """
    vil = catalog[catalog["img_type"] == "vil"].copy()
    counts = vil["id"].value_counts()
    duplicated = vil["id"].isin(counts.index[counts > 1])
    pct_missing = pd.to_numeric(vil["pct_missing"], errors="coerce").fillna(100.0)
    too_incomplete = ~duplicated & (pct_missing > max_pct_missing)
    events = vil[~duplicated & ~too_incomplete].copy()
    times = pd.to_datetime(events["time_utc"], errors="coerce", format="mixed")
    if times.isna().any():
        bad = events.loc[times.isna(), "id"].iloc[0]
        raise UserError(f"{source}: time_utc of event {bad} is not a date/time like '2019-06-02 18:33:00'; fix the row")
    events["time_utc"] = times
    events["event_type"] = events["event_type"].fillna("").astype(str)  # random (non-storm) events have none
    events["id"] = events["id"].astype(str)
    file_index = pd.to_numeric(events["file_index"], errors="coerce")
    if file_index.isna().any() or (file_index < 0).any():
        bad = events.loc[file_index.isna() | (file_index < 0), "id"].iloc[0]
        raise UserError(f"{source}: file_index of event {bad} is not a non-negative integer; fix the row")
    events["file_index"] = file_index.astype(int)
    events = events.sort_values(["time_utc", "id"], kind="stable").reset_index(drop=True)
    report = {"catalog_rows": len(catalog), "vil_rows": len(vil), "dropped_duplicate_rows": int(duplicated.sum()),
              "dropped_missing_data": int(too_incomplete.sum()), "events": len(events)}
    return events, report


@dataclass(frozen=True)
class DateRange:
    """A split's half-open date range start < time_utc ≤ end (either side may be open)."""

    start: pd.Timestamp | None
    end: pd.Timestamp | None

    def mask(self, times: pd.Series) -> pd.Series:
        keep = pd.Series(True, index=times.index)
        if self.start is not None:
            keep &= times > self.start
        if self.end is not None:
            keep &= times <= self.end
        return keep

    def __str__(self) -> str:
        def show(t: pd.Timestamp) -> str:
            return f"{t:%Y-%m-%d}" if t == t.normalize() else t.isoformat(sep=" ")

        start = f"{show(self.start)} < " if self.start is not None else ""
        end = f" ≤ {show(self.end)}" if self.end is not None else ""
        return f"{start}time_utc{end}"


def parse_splits(splits_cfg: Mapping) -> dict[str, DateRange]:
    """{"train": [start, end], ...} with null for an open side → DateRange per split."""
    ranges = {}
    for split in SPLITS:
        bounds = splits_cfg.get(split) if isinstance(splits_cfg, Mapping) else None
        if bounds is None or len(bounds) != 2:
            raise UserError(f"dataset.splits.{split} must be [start, end] dates (null for an open side), "
                            f"e.g. [null, '2019-01-01']")
        try:
            start, end = (None if b is None else pd.Timestamp(str(b)) for b in bounds)
        except ValueError as err:
            raise UserError(f"dataset.splits.{split}: {list(bounds)} are not dates like '2019-01-01'") from err
        ranges[split] = DateRange(start, end)
    return ranges


def sequence_starts(frames_per_event: int, in_len: int, out_len: int, stride: int) -> list[int]:
    """First frame of each in_len + out_len window cut from an event, every `stride` frames."""
    length = in_len + out_len
    if in_len < 1 or out_len < 1 or stride < 1:
        raise UserError(f"dataset.in_len, out_len and stride must be ≥ 1 (got {in_len}, {out_len}, {stride})")
    if length > frames_per_event:
        raise UserError(f"dataset.in_len + dataset.out_len = {length} exceeds dataset.frames_per_event = "
                        f"{frames_per_event}; shorten the sequences")
    return list(range(0, frames_per_event - length + 1, stride))


def inspect_vil_file(path: Path, height: int, width: int, frames: int, max_index: int = -1,
                     example_id: str = "", synthetic: bool = False) -> str | None:
    """Why an HDF5 file cannot serve these events (one line), or None if it can."""
    named = f" (named in CATALOG.csv for event {example_id})" if example_id else ""
    if not path.is_file():
        return f"{path}{named} is missing; " + (REGENERATE if synthetic else
                                               "sync it with `aws s3 sync --no-sign-request s3://sevir/data/vil "
                                               "<root>/data/vil` or remove its rows from the catalog")
    try:
        with h5py.File(path, "r") as f:
            if "vil" not in f:
                return f"{path} has no 'vil' dataset; it is not a SEVIR VIL file, download it again"
            vil = f["vil"]
            if vil.dtype != np.uint8:
                return f"{path}: 'vil' is {vil.dtype}, expected uint8; download the file again"
            if vil.ndim != 4 or vil.shape[1:] != (height, width, frames):
                return (f"{path}: 'vil' has shape {vil.shape}, expected N×{height}×{width}×{frames}; set "
                        f"dataset.height/width/frames_per_event to match the data (or pick the right dataset)")
            if max_index >= vil.shape[0]:
                return (f"{path} holds {vil.shape[0]} events but CATALOG.csv asks for file_index {max_index}; "
                        f"the catalog and the data do not match, download both again")
    except OSError as err:
        return f"{path} is not a readable HDF5 file ({err}); download it again"
    return None


# ----------------------------------------------------------------------------------------------- dataset


class SevirSequences(Dataset):
    """Map-style dataset of (inputs, targets) windows cut from SEVIR events, read lazily from HDF5."""

    def __init__(self, root: str | Path, events: pd.DataFrame, starts: list[int], in_len: int, out_len: int,
                 augment: bool = False):
        self.data_dir = Path(root) / "data"
        self.in_len, self.out_len, self.augment = in_len, out_len, augment
        # plain Python lists pickle cheaply to worker processes and index fast
        self.file_names = events["file_name"].astype(str).tolist()
        self.file_index = events["file_index"].astype(int).tolist()
        self.event_id = events["id"].astype(str).tolist()
        self.event_type = events["event_type"].astype(str).tolist()
        self.time_utc = [t.isoformat() for t in events["time_utc"]]
        self.starts = list(starts)
        # the catalog's frame offsets (minutes from time_utc) give each forecast's init time; corners its place
        self.init_times = None
        if "minute_offsets" in events:
            offsets = [[int(m) for m in str(text).split(":")] if isinstance(text, str) else None
                       for text in events["minute_offsets"]]
            if all(o is not None and len(o) > max(self.starts) + in_len - 1 for o in offsets):
                self.init_times = [[(t + pd.Timedelta(minutes=o[start + in_len - 1])).isoformat() for start in
                                    self.starts] for t, o in zip(events["time_utc"], offsets)]
        self.corners = {key: pd.to_numeric(events[key], errors="coerce").tolist() for key in CORNER_COLUMNS
                        if key in events}
        self._handles: dict[str, tuple[h5py.File, h5py.Dataset]] = {}  # file name → (file, its "vil")
        self._handles_pid: int | None = None

    def __len__(self) -> int:
        return len(self.file_names) * len(self.starts)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_handles_pid"] = {}, None  # open files never travel to another process
        return state

    def _vil(self, file_name: str) -> h5py.Dataset:
        pid = os.getpid()
        if self._handles_pid != pid:  # first read in this process (e.g. a freshly forked worker)
            self._handles, self._handles_pid = {}, pid
        handle = self._handles.get(file_name)
        if handle is None:
            opened = h5py.File(self.data_dir / file_name, "r")
            handle = self._handles[file_name] = (opened, opened["vil"])  # the lookup costs as much as a read
        return handle[1]

    def read_frames(self, index: int) -> np.ndarray:
        """uint8 T × H × W window for sample `index`, before augmentation."""
        event, seq = divmod(index, len(self.starts))
        t0 = self.starts[seq]
        frames = self._vil(self.file_names[event])[self.file_index[event], :, :, t0:t0 + self.in_len + self.out_len]
        return np.transpose(frames, (2, 0, 1))

    def _augmented(self, frames: np.ndarray) -> np.ndarray:
        # torch's RNG is reseeded per worker by the DataLoader (and by seed_everything), unlike numpy's
        flip_rows, flip_cols, quarter_turns = torch.randint(0, 2, (2,)).tolist() + [int(torch.randint(0, 4, ()))]
        if frames.shape[1] != frames.shape[2]:
            quarter_turns = 2 * (quarter_turns % 2)  # only half turns keep a non-square grid's shape
        if flip_rows:
            frames = frames[:, ::-1]
        if flip_cols:
            frames = frames[:, :, ::-1]
        return np.rot90(frames, quarter_turns, axes=(1, 2))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        frames = self.read_frames(index)
        if self.augment:
            frames = self._augmented(frames)
        # a 256-entry table turns uint8 into VIL/255 in one gather, the cheapest of the conversions we timed
        x = torch.from_numpy(_SCALED_VALUES[np.ascontiguousarray(frames)]).unsqueeze(-1)
        event, seq = divmod(index, len(self.starts))
        item = {"inputs": x[:self.in_len], "targets": x[self.in_len:], "event_id": self.event_id[event],
                "event_type": self.event_type[event], "time_utc": self.time_utc[event],
                "seq_start": self.starts[seq], **{key: values[event] for key, values in self.corners.items()}}
        if self.init_times is not None:
            item["init_time"] = self.init_times[event][seq]
        return item

    def close(self) -> None:
        if self._handles_pid == os.getpid():
            for opened, _ in self._handles.values():
                opened.close()
        self._handles, self._handles_pid = {}, None


# ----------------------------------------------------------------------------------------------- datamodule


class SevirDataModule(ForecastDataModule):
    """SEVIR (or SEVIR-LR) from `cfg.dataset`; configs/dataset/sevir.yaml documents the keys."""

    def __init__(self, cfg: dict, split: str | None = None):
        super().__init__(cfg, split)
        self.root = Path(str(cfg["root"])).expanduser()
        self.in_len, self.out_len, self.stride = int(cfg["in_len"]), int(cfg["out_len"]), int(cfg["stride"])
        self.height, self.width = int(cfg["height"]), int(cfg["width"])
        self.frames_per_event = int(cfg["frames_per_event"])
        self.frame_minutes = int(cfg["frame_minutes"])
        self.max_pct_missing = float(cfg["max_pct_missing"])
        self.augment = bool(cfg["augment"])
        self.synthetic = bool(cfg.get("synth"))  # only the twins' configs have a synth node
        if cfg["predict_split"] not in SPLITS:
            raise UserError(f"dataset.predict_split={cfg['predict_split']!r}; use one of {', '.join(SPLITS)}")
        self.split_ranges = parse_splits(cfg["splits"])
        self.starts = sequence_starts(self.frames_per_event, self.in_len, self.out_len, self.stride)
        self._events: pd.DataFrame | None = None
        self.catalog_report: dict[str, int] = {}
        self.datasets: dict[str, SevirSequences] = {}

    # -- catalog and splits (no HDF5 access)
    @property
    def events(self) -> pd.DataFrame:
        if self._events is None:
            catalog = read_catalog(self.root, synthetic=self.synthetic)
            self._events, self.catalog_report = select_vil_events(catalog, self.max_pct_missing,
                                                                  str(self.root / "CATALOG.csv"))
        return self._events

    def split_events(self, split: str) -> pd.DataFrame:
        return self.events[self.split_ranges[split].mask(self.events["time_utc"])]

    def split_sizes(self) -> dict[str, dict[str, int]]:
        sizes = {}
        for split in SPLITS:
            n_events = len(self.split_events(split))
            sizes[split] = {"events": n_events, "sequences": n_events * len(self.starts)}
        return sizes

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "root": str(self.root), "frame_minutes": self.frame_minutes,
                "height": self.height, "width": self.width, "channels": 1, "in_len": self.in_len,
                "out_len": self.out_len, "stride": self.stride, "frames_per_event": self.frames_per_event,
                "splits": {split: {"range": str(self.split_ranges[split]), **size}
                           for split, size in self.split_sizes().items()}}

    def forecast_layout(self) -> ForecastLayout:
        """x/y: pixel centres in km from the patch's lower-left corner (its lat/lon: llcrnrlat/llcrnrlon per
        sample); row 0 is the top (northern) edge of SEVIR's images, so y decreases down the rows."""
        km = PATCH_KM / self.width
        comment = ("offset within the patch, whose lower-left corner (llcrnrlat, llcrnrlon per sample) lies at "
                   "another place of SEVIR's Lambert azimuthal equal-area projection in every event")
        coords = {"x": ((np.arange(self.width) + 0.5) * km,
                        {"units": "km", "standard_name": "projection_x_coordinate", "comment": comment,
                         "long_name": "distance east of the patch's lower-left corner (pixel centre)"}),
                  "y": ((self.height - 0.5 - np.arange(self.height)) * PATCH_KM / self.height,
                        {"units": "km", "standard_name": "projection_y_coordinate", "comment": comment,
                         "long_name": "distance north of the patch's lower-left corner (pixel centre)"})}
        return ForecastLayout(grid=("y", "x"), coords=coords, frame=pd.Timedelta(minutes=self.frame_minutes),
                              variable={"units": "1", "long_name": "vertically integrated liquid (VIL) in SEVIR's "
                                                                   "digital levels 0-255"})

    @property
    def units(self) -> PhysicalUnits:
        """Model scale [0, 1] → VIL pixel values 0–255 (the scale of the CSI thresholds)."""
        return PhysicalUnits(255.0)

    def dataset(self, split: str) -> SevirSequences:
        if split in self.datasets:
            return self.datasets[split]
        events = self.split_events(split)
        if events.empty:
            raise UserError(f"dataset.splits.{split} ({self.split_ranges[split]}) selects no events from "
                            f"{self.root / 'CATALOG.csv'} (after max_pct_missing={self.max_pct_missing}); "
                            f"widen the date range or use another root")
        self._check_files(events)
        self.datasets[split] = SevirSequences(self.root, events, self.starts, self.in_len, self.out_len,
                                              augment=self.augment and split == "train" and not self.evaluating)
        return self.datasets[split]

    def _check_files(self, events: pd.DataFrame) -> None:
        # opened and closed here, in the main process: workers open their own handles later
        for file_name, rows in events.groupby("file_name", sort=True):
            problem = inspect_vil_file(self.root / "data" / str(file_name), self.height, self.width,
                                       self.frames_per_event, int(rows["file_index"].max()), rows["id"].iloc[0],
                                       synthetic=self.synthetic)
            if problem:
                raise UserError(problem)

    def teardown(self, stage: str | None = None) -> None:
        for dataset in self.datasets.values():
            dataset.close()


DATASETS.register("sevir")(SevirDataModule)
DATASETS.register("sevirlr")(SevirDataModule)
