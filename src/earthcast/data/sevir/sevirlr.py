"""Build SEVIR-LR from a SEVIR root: every 2nd frame (5 → 10 min, 49 → 25 frames) and 3×3 max pooling
(384 → 128 px), the low-resolution variant PreDiff is evaluated on.

Max pooling (not averaging) keeps the storm cores that the high CSI thresholds (181, 219) measure.
The new root mirrors SEVIR's layout with the same relative file names, so the same reader serves both.
Each output file is written under a temporary name and renamed when complete, so an interrupted build
resumes by skipping finished files; CATALOG.csv is written last, so its presence marks a finished root.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from earthcast.data.sevir.reader import inspect_vil_file, read_catalog
from earthcast.errors import UserError
from earthcast.io import AtomicFile, write_csv

POOL = 3  # 3×3 pixels → 1
FRAME_STEP = 2  # keep frames 0, 2, 4, ...
CHUNK_EVENTS = 8  # events read and written at once: 8 × 384 × 384 × 49 bytes ≈ 58 MB


def downsample_events(vil: np.ndarray) -> np.ndarray:
    """uint8 N × H × W × T → N × H/3 × W/3 × ceil(T/2): every 2nd frame, 3×3 max pooling."""
    n, height, width, _ = vil.shape
    frames = vil[..., ::FRAME_STEP]
    blocks = frames.reshape(n, height // POOL, POOL, width // POOL, POOL, frames.shape[-1])
    return blocks.max(axis=(2, 4))


def _every_other_offset(minute_offsets: object) -> object:
    if not isinstance(minute_offsets, str):
        return minute_offsets
    return ":".join(minute_offsets.split(":")[::FRAME_STEP])


def _finished_file_ok(path: Path, n_events: int, shape: tuple[int, int, int]) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "vil" in f and f["vil"].shape == (n_events, *shape) and f["vil"].dtype == np.uint8
    except OSError:
        return False


def _convert_file(src: Path, dst: Path, progress: Progress, task) -> None:
    """Write dst from src chunk by chunk, atomically."""
    with AtomicFile(dst) as partial, h5py.File(src, "r") as fin, h5py.File(partial, "w") as fout:
        vil_in = fin["vil"]
        n, height, width, frames = vil_in.shape
        out_shape = (n, height // POOL, width // POOL, len(range(0, frames, FRAME_STEP)))
        vil_out = fout.create_dataset("vil", shape=out_shape, dtype=np.uint8, track_times=False)
        if "id" in fin:
            fout.create_dataset("id", data=fin["id"][()], track_times=False)
        for start in range(0, n, CHUNK_EVENTS):
            stop = min(start + CHUNK_EVENTS, n)
            vil_out[start:stop] = downsample_events(vil_in[start:stop])
            progress.advance(task, stop - start)


def _event_ranges(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-event min and max of an output file, read chunk by chunk, for the new catalog."""
    with h5py.File(path, "r") as f:
        vil = f["vil"]
        lows, highs = [], []
        for start in range(0, vil.shape[0], CHUNK_EVENTS):
            chunk = vil[start:start + CHUNK_EVENTS]
            lows.append(chunk.min(axis=(1, 2, 3)))
            highs.append(chunk.max(axis=(1, 2, 3)))
    return np.concatenate(lows), np.concatenate(highs)


def build_sevirlr(src: str | Path, dst: str | Path, progress: bool = True) -> Path:
    """SEVIR root `src` → SEVIR-LR root `dst` (VIL only). Safe to rerun after an interruption."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if src.resolve() == dst.resolve():
        raise UserError(f"SEVIR-LR destination {dst} is the source root; choose a new directory (dst=...)")
    catalog = read_catalog(src, key="src=")
    vil_rows = catalog[catalog["img_type"] == "vil"].copy()
    if vil_rows.empty:
        raise UserError(f"{src / 'CATALOG.csv'} has no img_type == 'vil' rows; SEVIR-LR is built from VIL")
    files = sorted(vil_rows["file_name"].astype(str).unique())

    plan = []  # (file_name, source path, output path, events, output shape)
    for file_name in files:
        src_path = src / "data" / file_name
        rows = vil_rows[vil_rows["file_name"] == file_name]
        if not src_path.is_file():
            raise UserError(inspect_vil_file(src_path, 0, 0, 0, example_id=str(rows["id"].iloc[0])))
        try:
            with h5py.File(src_path, "r") as f:
                if "vil" not in f or f["vil"].dtype != np.uint8 or f["vil"].ndim != 4:
                    raise UserError(f"{src_path}: no uint8 N×H×W×T 'vil' dataset; download the file again")
                n, height, width, frames = f["vil"].shape
        except OSError as err:
            raise UserError(f"{src_path} is not a readable HDF5 file ({err}); download it again") from err
        if height % POOL or width % POOL:
            raise UserError(f"{src_path}: frames are {height}×{width}, not divisible by {POOL} for 3×3 pooling")
        out_shape = (height // POOL, width // POOL, len(range(0, frames, FRAME_STEP)))
        plan.append((file_name, src_path, dst / "data" / file_name, n, out_shape))

    total = sum(n for _, _, out_path, n, shape in plan if not _finished_file_ok(out_path, n, shape))
    columns = [TextColumn("[bold]SEVIR-LR[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("events"), TimeRemainingColumn()]
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("pooling", total=total)
        for file_name, src_path, out_path, n, shape in plan:
            if not _finished_file_ok(out_path, n, shape):  # resumable: finished files are skipped
                bar.update(task, description=Path(file_name).name)
                _convert_file(src_path, out_path, bar, task)
            ranges[file_name] = _event_ranges(out_path)

    _write_catalog(vil_rows, ranges, plan, dst)
    return dst


def _write_catalog(vil_rows: pd.DataFrame, ranges: dict, plan: list, dst: Path) -> None:
    shapes = {file_name: shape for file_name, _, _, _, shape in plan}
    rows = vil_rows.copy()
    names = rows["file_name"].astype(str)
    index = pd.to_numeric(rows["file_index"]).astype(int)
    if "size_y" in rows:
        rows["size_y"] = [shapes[name][0] for name in names]
    if "size_x" in rows:
        rows["size_x"] = [shapes[name][1] for name in names]
    if "minute_offsets" in rows:
        rows["minute_offsets"] = rows["minute_offsets"].map(_every_other_offset)
    for column, which in (("data_min", 0), ("data_max", 1)):
        if column in rows:
            rows[column] = [float(ranges[name][which][i]) if i < len(ranges[name][which]) else np.nan
                            for name, i in zip(names, index)]
    write_csv(dst / "CATALOG.csv", rows)
