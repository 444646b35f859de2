"""`earthcast data check dataset=gridded dataset.path=...`: what the reader will see in a gridded store.

Reports the variable's shape, the time step and time coverage, the gaps in the time axis, and per split its
dates, frames, windows (samples) and NaN fraction; problems the reader would refuse (grid size, gaps without
allow_gaps, an empty split, a missing mask variable) become notes. A store that cannot be opened, or lacks the
variable, is a one-line error. Every frame is read once, chunk by chunk, so memory stays bounded.
"""

from __future__ import annotations

import numpy as np

from earthcast.config import plain
from earthcast.data.base import CHECKERS, SPLITS
from earthcast.data.gridded.reader import GriddedDataModule, in_range
from earthcast.data.gridded.store import duration
from earthcast.errors import UserError

#: gaps listed one by one in the notes before the rest are counted
LISTED_GAPS = 5


def check_gridded(cfg_dataset) -> dict:
    cfg = plain(cfg_dataset)
    module = GriddedDataModule({**cfg, "height": None, "width": None}, None)
    try:
        module.store  # noqa: B018 - opens the store: a missing variable or unreadable file raises here
    except UserError as err:
        if "dataset.height/width" not in str(err):
            raise
    store = module._store
    notes = []
    height, width = store.shape
    if (cfg["height"], cfg["width"]) != (height, width):
        notes.append(f"the grid is {height}×{width}: set dataset.height={height} dataset.width={width} "
                     f"(now {cfg['height']}×{cfg['width']})")
    found = module.gaps()
    for before, after in found[:LISTED_GAPS]:
        notes.append(f"gap: {before} → {after} ({duration(after - before)} instead of {duration(module.step)})")
    if len(found) > LISTED_GAPS:
        notes.append(f"… and {len(found) - LISTED_GAPS} more gaps")
    if found and not cfg["allow_gaps"]:
        notes.append("the reader refuses a time axis with gaps: fill them or set dataset.allow_gaps=true")
    module.cfg = {**module.cfg, "allow_gaps": True}  # count what each split would hold regardless
    static = None
    if module.mask_variable:
        try:
            static = module.static_valid()
        except UserError as err:
            notes.append(str(err))
    nan_frames = _nan_per_frame(store, static)
    splits = {}
    for split in SPLITS:
        inside = in_range(store.times, module.ranges[split])
        samples = len(module.window_starts(split))
        frames = np.flatnonzero(inside)
        facts = {"first": _time(store.times[frames[0]]) if frames.size else "",
                 "last": _time(store.times[frames[-1]]) if frames.size else "",
                 "frames": int(inside.sum()), "samples": samples,
                 "gaps": sum(1 for before, _ in found if inside[store.times.get_loc(before)]),
                 "nan_fraction": round(float(nan_frames[inside].mean()) if frames.size else 0.0, 6)}
        if samples == 0:
            notes.append(f"split {split} {module._range_text(split)} holds no window of {module.in_len + module.out_len} "
                         f"evenly spaced frames")
        splits[split] = facts
    return {"dataset": cfg["name"], "root": str(cfg["path"]), "variable": store.variable,
            "shape": [len(store.times), height, width], "dims": [store.time_dim, *store.dims],
            "time_step": duration(module.step), "first": _time(store.times[0]), "last": _time(store.times[-1]),
            "gaps": len(found), "nan_fraction": round(float(nan_frames.mean()), 6), "splits": splits,
            "notes": notes, "ok": not notes}


def _time(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}"


def _nan_per_frame(store, static: np.ndarray | None) -> np.ndarray:
    """Fraction of NaN (or masked) points in every frame, read chunk by chunk."""
    fractions = np.empty(len(store.times))
    step = store.chunk_frames
    for start in range(0, len(store.times), step):
        frames = store.frames(start, min(start + step, len(store.times)))
        missing = ~np.isfinite(frames)
        if static is not None:
            missing |= ~static
        fractions[start:start + len(frames)] = missing.reshape(len(frames), -1).mean(axis=1)
    store.close()
    return fractions


CHECKERS.register("gridded")(check_gridded)
