"""Synthetic SEVIR twin: a directory in the real SEVIR layout (CATALOG.csv + data/vil/<year>/*.h5) filled
with the storms of earthcast.data.sevir.storms, and the SEVIR-LR twin reduced from it.

Events are spread over the date splits in proportion to their length; storm events favour summer afternoons
and evenings, "random" events (ids R…, no event type) hold little weather. Every event draws from its own
generator seeded by (seed, event number), and HDF5 objects are written without timestamps, so the same
configuration gives byte-identical files. The settings are `dataset.synth.*` (configs/dataset/sevir_synth.yaml).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from earthcast.config import plain
from earthcast.data.base import SYNTHESIZERS, write_twin_record
from earthcast.data.sevir.reader import parse_splits
from earthcast.data.sevir.sevirlr import build_sevirlr
from earthcast.data.sevir.storms import DOMAIN_KM, EVENT_TYPES, FRAME_MINUTES, FRAMES, QUIET, synthesize_event
from earthcast.errors import UserError
from earthcast.io import atomic_directory

CATALOG_COLUMNS = ("id", "file_name", "file_index", "img_type", "time_utc", "minute_offsets", "episode_id",
                   "event_id", "event_type", "llcrnrlat", "llcrnrlon", "urcrnrlat", "urcrnrlon", "proj",
                   "size_x", "size_y", "height_m", "width_m", "data_min", "data_max", "pct_missing")
PROJ = "+proj=laea +lat_0=38 +lon_0=-98 +units=m +a=6370997.0 +ellps=sphere "
MINUTE_OFFSETS = ":".join(str(m) for m in range(-120, 121, FRAME_MINUTES))
#: the dataset keys that shape the twin's files (the events are spread over the date splits)
RECORDED = ("synth", "splits")
#: catalog-only rows for the other sensors (no files are written for them), with their grid relative to VIL
OTHER_SENSORS = {"ir069": 0.5, "ir107": 0.5, "vis": 2.0}


# ----------------------------------------------------------------------------------------------- catalog


def _file_name(time: pd.Timestamp, random_event: bool) -> str:
    year = time.year
    if random_event:  # SEVIR's random-event files cover four months, storm-event files six
        period = ["0101_0430", "0501_0831", "0901_1231"][(time.month - 1) // 4]
        return f"vil/{year}/SEVIR_VIL_RANDOMEVENTS_{year}_{period}.h5"
    period = "0101_0630" if time.month <= 6 else "0701_1231"
    return f"vil/{year}/SEVIR_VIL_STORMEVENTS_{year}_{period}.h5"


def _event_time(rng: np.random.Generator, start: pd.Timestamp, end: pd.Timestamp,
                warm_season: bool) -> pd.Timestamp:
    """A time in (start, end]; storms favour summer afternoons and evenings (UTC), random events do not."""
    minutes = max(1, int((end - start).total_seconds() // 60))
    for _ in range(1000):
        t = start + pd.Timedelta(minutes=int(rng.integers(1, minutes + 1)))
        if not warm_season:
            return t
        t = t.normalize() + pd.Timedelta(hours=int((17 + rng.beta(2, 2) * 12) % 24),
                                         minutes=int(rng.integers(0, 60)))
        season = 0.2 + 0.8 * np.exp(-(((t.dayofyear - 180) / 60) ** 2))
        if rng.random() < season and start < t <= end:
            return t
    return start + pd.Timedelta(minutes=int(rng.integers(1, minutes + 1)))  # window too short to be picky


def plan_catalog(synth: Mapping, splits: Mapping, img_size: int) -> pd.DataFrame:
    """The VIL catalog rows of the twin (one per event), events spread over the date splits."""
    rng = np.random.default_rng([int(synth["seed"]), 0])
    n_events = int(synth["n_events"])
    if n_events < 3:
        raise UserError(f"dataset.synth.n_events={n_events}; the twin needs at least 3 events (one per split)")
    first, last = pd.Timestamp(str(synth["start"])), pd.Timestamp(str(synth["end"]))
    windows = []
    for split, dates in parse_splits(splits).items():
        lo = max(first, dates.start) if dates.start is not None else first
        hi = min(last, dates.end) if dates.end is not None else last
        if hi <= lo:
            raise UserError(f"dataset.splits.{split} does not overlap synth.start..synth.end ({first}..{last})")
        windows.append((lo, hi))
    days = np.array([(hi - lo).total_seconds() for lo, hi in windows])
    counts = np.maximum(1, np.round(n_events * days / days.sum()).astype(int))
    counts[int(np.argmax(counts))] += n_events - counts.sum()
    random_fraction = float(synth["random_fraction"])
    rows = []
    event_ids = rng.choice(np.arange(600_000, 900_000), n_events, replace=False)
    for (lo, hi), count in zip(windows, counts):
        for random_event in rng.random(count) < random_fraction:
            time = _event_time(rng, lo, hi, warm_season=not random_event)
            lat, lon = rng.uniform(28, 46), rng.uniform(-104, -80)
            half_lat = DOMAIN_KM / 2 / 111.0
            half_lon = half_lat / np.cos(np.radians(lat))
            event_type = rng.choice(list(EVENT_TYPES), p=[w for w, _ in EVENT_TYPES.values()])
            event_id = int(event_ids[len(rows)])
            rows.append({
                "id": f"R{time:%y%m%d%H%M}{len(rows):04d}" if random_event else f"S{event_id}",
                "file_name": _file_name(time, bool(random_event)), "img_type": "vil",
                "time_utc": time.strftime("%Y-%m-%d %H:%M:%S"), "minute_offsets": MINUTE_OFFSETS,
                "episode_id": np.nan if random_event else float(rng.integers(110_000, 145_000)),
                "event_id": np.nan if random_event else float(event_id),
                "event_type": np.nan if random_event else str(event_type),
                "llcrnrlat": lat - half_lat, "llcrnrlon": lon - half_lon, "urcrnrlat": lat + half_lat,
                "urcrnrlon": lon + half_lon, "proj": PROJ, "size_x": img_size, "size_y": img_size,
                "height_m": DOMAIN_KM * 1000, "width_m": DOMAIN_KM * 1000, "pct_missing": 0.0})
    events = pd.DataFrame(rows).sort_values("time_utc", kind="stable").reset_index(drop=True)
    events["file_index"] = events.groupby("file_name").cumcount()
    return events


def _other_sensor_rows(events: pd.DataFrame, img_size: int) -> pd.DataFrame:
    frames = []
    for sensor, scale in OTHER_SENSORS.items():
        rows = events.copy()
        rows["img_type"] = sensor
        rows["file_name"] = [f"{sensor}/{name.split('/', 1)[1].replace('_VIL_', f'_{sensor.upper()}_')}"
                             for name in rows["file_name"]]
        rows["size_x"] = rows["size_y"] = max(1, int(round(img_size * scale)))
        rows["data_min"] = rows["data_max"] = np.nan
        frames.append(rows)
    return pd.concat(frames)


# ----------------------------------------------------------------------------------------------- writers


def write_sevir_twin(root: Path, synth: Mapping, splits: Mapping, img_size: int,
                     progress: bool = True) -> Path:
    """Write the twin at `root` (which must not exist yet), file by file, events generated one at a time."""
    events = plan_catalog(synth, splits, img_size)
    styles = [EVENT_TYPES[t][1] if isinstance(t, str) else QUIET for t in events["event_type"]]
    seed = int(synth["seed"])
    columns = [TextColumn("[bold]SEVIR twin[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("events"), TimeRemainingColumn()]
    data_min, data_max = np.zeros(len(events)), np.zeros(len(events))
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"{img_size}×{img_size}", total=len(events))
        for file_name, rows in events.groupby("file_name", sort=True):
            path = root / "data" / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w", track_order=False) as f:
                f.create_dataset("id", data=np.array(rows["id"].tolist(), dtype="S"), track_times=False)
                vil = f.create_dataset("vil", shape=(len(rows), img_size, img_size, FRAMES), dtype=np.uint8,
                                       track_times=False)
                for row in rows.itertuples():
                    frames = synthesize_event(np.random.default_rng([seed, 1, row.Index]), styles[row.Index],
                                              img_size)
                    vil[row.file_index] = frames
                    data_min[row.Index], data_max[row.Index] = frames.min(), frames.max()
                    bar.advance(task)
    events["data_min"], events["data_max"] = data_min, data_max
    catalog = events
    if bool(synth["other_sensors"]):
        catalog = pd.concat([events, _other_sensor_rows(events, img_size)])
        catalog = catalog.sort_values(["time_utc", "id"], kind="stable")
    catalog[list(CATALOG_COLUMNS)].to_csv(root / "CATALOG.csv", index=False)
    return root


def _target(cfg_dataset: Mapping) -> Path:
    root = Path(str(cfg_dataset["root"])).expanduser()
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} already exists; delete it or set dataset.root elsewhere to generate a new twin")
    return root


def _img_size(cfg_dataset: Mapping) -> int:
    size = int(cfg_dataset["synth"]["img_size"])
    for key in ("height", "width"):
        if int(cfg_dataset[key]) != size:
            raise UserError(f"dataset.synth.img_size={size} but dataset.{key}={cfg_dataset[key]}; "
                            f"make them equal (the twin's frames are square)")
    return size


@SYNTHESIZERS.register("sevir")
def synthesize_sevir(cfg_dataset: Mapping, progress: bool = True) -> Path:
    """Generate the SEVIR twin described by cfg_dataset.synth at cfg_dataset.root (atomically)."""
    cfg = plain(cfg_dataset)
    img_size, root = _img_size(cfg), _target(cfg)
    with atomic_directory(root) as staging:
        write_sevir_twin(staging, cfg["synth"], cfg["splits"], img_size, progress)
        write_twin_record(staging, cfg, RECORDED)
    return root


@SYNTHESIZERS.register("sevirlr")
def synthesize_sevirlr(cfg_dataset: Mapping, progress: bool = True) -> Path:
    """SEVIR-LR twin: a SEVIR twin at 3× synth.img_size, reduced by the SEVIR-LR builder."""
    cfg = plain(cfg_dataset)
    img_size, root = _img_size(cfg), _target(cfg)
    # the full-resolution twin only feeds the reduction: a temporary directory, never published
    with atomic_directory(root) as staging, tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}-full.") as full:
        write_sevir_twin(Path(full), cfg["synth"], cfg["splits"], 3 * img_size, progress)
        build_sevirlr(Path(full), staging, progress)
        write_twin_record(staging, cfg, RECORDED)
    return root


__all__ = ["CATALOG_COLUMNS", "synthesize_sevir", "synthesize_sevirlr", "write_sevir_twin"]
