"""Hand-written SEVIR roots for the SEVIR tests (written with h5py/pandas, independent of the generator).

Every VIL frame carries its own coordinates so tests can tell exactly what was read:
    pixel (0, 0) = frame number t,  pixel (0, 1) = 100 + file_index,  all other pixels = fixed random bytes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from tests.conftest import dataset_config

CATALOG_COLUMNS = ["id", "file_name", "file_index", "img_type", "time_utc", "minute_offsets", "episode_id",
                   "event_id", "event_type", "llcrnrlat", "llcrnrlon", "urcrnrlat", "urcrnrlon", "proj",
                   "size_x", "size_y", "height_m", "width_m", "data_min", "data_max", "pct_missing"]
FILE_A = "vil/2018/SEVIR_VIL_STORMEVENTS_2018_0101_0630.h5"
FILE_B = "vil/2019/SEVIR_VIL_STORMEVENTS_2019_0101_0630.h5"


def event_frames(file_index: int, height: int, width: int, frames: int, seed: int = 0) -> np.ndarray:
    """The uint8 H × W × T block written for an event (see the module docstring)."""
    rng = np.random.default_rng([seed, file_index])
    block = rng.integers(0, 256, (height, width, frames), dtype=np.uint8)
    block[0, 0, :] = np.arange(frames)
    block[0, 1, :] = 100 + file_index
    return block


def row(event_id: str, time_utc: str, file_name: str = FILE_A, file_index: int = 0, img_type: str = "vil",
        pct_missing: float = 0.0, event_type: str | None = "Hail", size: int = 6) -> dict:
    return {"id": event_id, "file_name": file_name, "file_index": file_index, "img_type": img_type,
            "time_utc": time_utc, "minute_offsets": ":".join(str(m) for m in range(-120, 121, 5)),
            "episode_id": 1.0, "event_id": 2.0, "event_type": event_type, "llcrnrlat": 30.0, "llcrnrlon": -100.0,
            "urcrnrlat": 33.0, "urcrnrlon": -97.0, "proj": "+proj=laea", "size_x": size, "size_y": size,
            "height_m": 384000.0, "width_m": 384000.0, "data_min": 0.0, "data_max": 255.0,
            "pct_missing": pct_missing}


def write_root(root: Path, rows: list[dict], height: int = 6, width: int = 6, frames: int = 49,
               n_per_file: dict[str, int] | None = None) -> Path:
    """CATALOG.csv with `rows` plus one HDF5 file per VIL file name (holding max file_index + 1 events,
    or n_per_file[name]); non-VIL rows get no files, like a root where only data/vil was synced."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=CATALOG_COLUMNS).to_csv(root / "CATALOG.csv", index=False)
    counts: dict[str, int] = {}
    for r in rows:
        if r["img_type"] == "vil":
            counts[r["file_name"]] = max(counts.get(r["file_name"], 0), r["file_index"] + 1)
    counts.update(n_per_file or {})
    ids: dict[str, dict[int, str]] = {}
    for r in rows:
        if r["img_type"] == "vil":
            ids.setdefault(r["file_name"], {})[r["file_index"]] = r["id"]
    for name, n in counts.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f["vil"] = np.stack([event_frames(i, height, width, frames) for i in range(n)])
            f["id"] = np.array([ids.get(name, {}).get(i, f"X{i}") for i in range(n)], dtype="S")
    return root


def standard_rows() -> list[dict]:
    """Two events per split in two files, plus rows the reader must ignore."""
    return [
        row("S1", "2018-03-01 12:00:00", FILE_A, 0, event_type="Hail"),
        row("S2", "2018-05-02 18:30:00", FILE_A, 1, event_type="Tornado"),
        row("S3", "2019-02-01 00:10:00", FILE_B, 0, event_type="Flash Flood"),
        row("S4", "2019-05-31 23:55:00", FILE_B, 1, event_type=None),
        row("S5", "2019-07-04 20:00:00", FILE_B, 2, event_type="Heavy Rain"),
        row("S6", "2019-08-01 01:00:00", FILE_B, 3, event_type="Thunderstorm Wind"),
        # ignored: another sensor (its file does not exist), and incomplete data
        row("S1", "2018-03-01 12:00:00", "ir069/2018/SEVIR_IR069_STORMEVENTS_2018_0101_0630.h5", 0, img_type="ir069"),
        row("S7", "2018-06-01 00:00:00", FILE_A, 2, pct_missing=5.0),
    ]


def config(root: Path, **overrides) -> dict:
    """configs/dataset/sevir.yaml for a hand-written root (6×6 frames, small batches, no workers)."""
    values = {"root": str(root), "height": 6, "width": 6, "batch_size": 2, "eval_batch_size": 2, "num_workers": 0,
              "seed": 0}
    return dataset_config("sevir", **{**values, **overrides})
