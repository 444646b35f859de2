"""Sequence figures: rows of frames (context, target, forecasts) in physical units, as PNG or animated GIF.

    plot_rows            the one drawing routine: any rows of T×H×W frames, one panel per (picked) frame
    plot_sequences       input / target / prediction of one sample (plots/sequence_<i>.png)
    plot_forecast_file   the first samples of a stored forecast file
    plot_knowledge_rows  context, target and one row per knowledge-control setting (`earthcast sample`)
    write_rows_gif       the same rows animated over lead time
Matplotlib's object API with the Agg canvas: no pyplot global state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from earthcast.io import AtomicFile, save_figure
from earthcast.viz.vil_colormap import vil_cmap

#: (label, T×H×W frames, whether the frames are the context: times count back from the last one)
Row = tuple[str, np.ndarray, bool]


def frames_of(x) -> np.ndarray:
    """A tensor or array T×H×W[×1] (any float dtype) as float32 T×H×W for drawing."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x


def _pick(n_frames: int, max_columns: int | None) -> list[int]:
    if max_columns is None or n_frames <= max_columns:
        return list(range(n_frames))
    return sorted(set(np.linspace(0, n_frames - 1, max_columns).round().astype(int).tolist()))


def _style(vil: bool, rows: list[Row]) -> dict:
    if vil:
        cmap, norm = vil_cmap()
        return {"cmap": cmap, "norm": norm, "origin": "upper"}
    limit = max(float(np.nanmax(np.abs(frames))) for _, frames, _ in rows) or 1.0
    return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit, "origin": "lower"}


def plot_rows(path: str | Path, rows: list[Row], *, frame_minutes: float | None = 5, vil: bool = True,
              max_columns: int | None = 8, title: str = "") -> Path:
    """One figure, one row per entry of `rows`; at most `max_columns` evenly spread frames per row (None: all),
    each titled with its time relative to the forecast start."""
    picks = [_pick(frames.shape[0], max_columns) for _, frames, _ in rows]
    columns = max(len(p) for p in picks)
    figure = Figure(figsize=(1.6 * columns, 1.7 * len(rows) + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    style = _style(vil, rows)
    image = None
    for r, ((label, frames, is_context), picked) in enumerate(zip(rows, picks)):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(picked):
                ax.axis("off")
                continue
            t = picked[c]
            image = ax.imshow(frames[t], **style)
            if frame_minutes:
                offset = (t - frames.shape[0] + 1) * frame_minutes if is_context else (t + 1) * frame_minutes
                ax.set_title(f"{offset:+.0f} min", fontsize=7)
            else:
                ax.set_title(f"{'t' if is_context else 'lead'} {t + 1}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="VIL (0–255)" if vil else "SST anomaly (°C)")
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path, dpi=110)


def plot_sequences(path: str | Path, context: np.ndarray | None, target: np.ndarray, prediction: np.ndarray,
                   frame_minutes: float | None = 5, title: str = "", vil: bool = True,
                   max_columns: int = 8) -> Path:
    """One figure for one sample: rows input, target, prediction; arrays are T×H×W in physical units."""
    rows = [("input", context, True)] if context is not None else []
    rows += [("target", target, False), ("prediction", prediction, False)]
    return plot_rows(path, rows, frame_minutes=frame_minutes, vil=vil, max_columns=max_columns, title=title)


def plot_forecast_file(predictions_nc: str | Path, out_dir: str | Path, n_samples: int = 2,
                       frame_minutes: float | None = 5) -> list[Path]:
    """Plot the first samples of a stored forecast file (the deterministic prediction or member 0)."""
    paths = []
    with xr.open_dataset(predictions_nc) as ds:
        vil = str(ds.attrs.get("dataset", "")).startswith("sevir")
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


def plot_knowledge_rows(path: str | Path, context, target, rows, labels: list[str],
                        frame_minutes: float | None = None) -> Path:
    """One sample of `earthcast sample` (PreDiff's figure): every frame of the context, the target and each
    forecast row (tensors T×H×W×1 in VIL units)."""
    named: list[Row] = [("context", frames_of(context), True), ("target", frames_of(target), False)]
    named += [(label, frames_of(row), False) for label, row in zip(labels, rows)]
    return plot_rows(path, named, frame_minutes=frame_minutes, max_columns=None)


def write_rows_gif(path: str | Path, context, target, rows, labels: list[str], fps: float = 2.0) -> Path:
    """The knowledge figure animated: the context frames, then the target beside each forecast, lead by lead."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    cmap, norm = vil_cmap()
    context, target = frames_of(context), frames_of(target)
    panels = [("target", target)] + [(label, frames_of(row)) for label, row in zip(labels, rows)]
    figure = Figure(figsize=(1.8 * len(panels), 2.2))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    images = []
    for ax, (label, _) in zip(axes, panels):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=6)
        images.append(ax.imshow(context[0], cmap=cmap, norm=norm))
    title = figure.suptitle("", fontsize=8)
    n_context = context.shape[0]

    def draw(frame: int):
        for image, (_, frames) in zip(images, panels):
            image.set_data(context[frame] if frame < n_context else frames[frame - n_context])
        title.set_text("context" if frame < n_context else f"forecast lead {frame - n_context + 1}")
        return images

    animation = FuncAnimation(figure, draw, frames=n_context + target.shape[0], blit=False)
    with AtomicFile(path, suffix=Path(path).suffix) as tmp:  # Pillow picks the format from the name
        animation.save(str(tmp), writer=PillowWriter(fps=fps))
    return Path(path)
