"""Input / target / prediction sequence figures."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from earthcast.viz.vil_colormap import vil_cmap  # noqa: E402


def _pick(frames: np.ndarray, max_columns: int) -> list[int]:
    n = frames.shape[0]
    return sorted(set(np.linspace(0, n - 1, min(n, max_columns)).round().astype(int).tolist()))


def plot_sequences(path: str | Path, context: np.ndarray | None, target: np.ndarray, prediction: np.ndarray,
                   frame_minutes: float | None = 5, title: str = "", vil: bool = True,
                   max_columns: int = 8) -> Path:
    """One figure for one sample: rows input, target, prediction; arrays are T×H×W in physical units."""
    rows = [("input", context, True)] if context is not None else []
    rows += [("target", target, False), ("prediction", prediction, False)]
    columns = max(len(_pick(r[1], max_columns)) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns, 1.7 * len(rows) + 0.4), squeeze=False)
    if vil:
        cmap, norm = vil_cmap()
        style = {"cmap": cmap, "norm": norm}
    else:
        limit = float(np.nanmax(np.abs(target))) or 1.0
        style = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    image = None
    for row, (label, frames, is_input) in enumerate(rows):
        picks = _pick(frames, max_columns)
        for col in range(columns):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(picks):
                ax.axis("off")
                continue
            t = picks[col]
            image = ax.imshow(frames[t], origin="upper" if vil else "lower", **style)
            if frame_minutes:
                offset = (t - frames.shape[0] + 1) * frame_minutes if is_input else (t + 1) * frame_minutes
                ax.set_title(f"{offset:+.0f} min", fontsize=7)
            else:
                ax.set_title(f"{'t' if is_input else 'lead'} {t + 1}", fontsize=7)
        axes[row, 0].set_ylabel(label, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="VIL (0–255)" if vil else "SST anomaly (°C)")
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_forecast_file(predictions_nc: str | Path, out_dir: str | Path, n_samples: int = 2,
                       frame_minutes: float | None = 5) -> list[Path]:
    """Plot the first samples of a stored forecast file (the deterministic prediction or member 0)."""
    paths = []
    with xr.open_dataset(predictions_nc) as ds:
        vil = "lat" not in ds.dims
        for i in range(min(n_samples, ds.sizes["sample"])):
            prediction = ds["prediction"].isel(sample=i)
            if "member" in prediction.dims:
                prediction = prediction.isel(member=0)
            context = ds["context"].isel(sample=i).values if "context" in ds else None
            label = str(ds["event_id"].values[i]) if "event_id" in ds else f"sample {i}"
            paths.append(plot_sequences(Path(out_dir) / f"sequence_{i}.png", context,
                                        ds["target"].isel(sample=i).values, prediction.values,
                                        frame_minutes=frame_minutes, title=f"{ds.attrs.get('model', '')} {label}",
                                        vil=vil))
    return paths
