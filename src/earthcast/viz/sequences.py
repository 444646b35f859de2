"""Sequence figures: rows of frames (context, target, forecasts) in physical units, as PNG or animated GIF.

    plot_rows            the one drawing routine: any rows of T×H×W frames, columns evenly spaced in time
    plot_sequences       input / observed / forecast of one sample (plots/sequence_<k>.png)
    plot_forecast_file   the most active samples of a stored forecast file, and forecast.gif of the first
    plot_knowledge_rows  context, target and one row per knowledge-control setting (`earthcast sample`)
    write_rows_gif       the one animation: the observed field beside each forecast, frame by frame

The most active samples are those whose observed hour holds the most heavy precipitation, one per event, so
the figures show storms rather than empty fields, each titled with its own event. Matplotlib's object API
with the Agg canvas: no pyplot global state.
"""

from __future__ import annotations

import math
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
#: VIL from which a pixel counts as heavy precipitation when ranking samples by activity (a SEVIR threshold)
HEAVY_VIL = 133.0


def frames_of(x) -> np.ndarray:
    """A tensor or array T×H×W[×1] (any float dtype) as float32 T×H×W for drawing."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x


def column_picks(rows: list[Row], max_columns: int | None) -> list[list[int]]:
    """The frames each row shows, evenly spaced in time: leads step, 2·step, … with the smallest step that
    fits `max_columns` (None: every frame), and as many context frames at the same spacing, ending with the
    latest."""
    forecast_lengths = [frames.shape[0] for _, frames, is_context in rows if not is_context] or [1]
    step = 1 if max_columns is None else max(1, math.ceil(max(forecast_lengths) / max_columns))
    columns = max(len(range(step - 1, n, step)) for n in forecast_lengths)
    picks = []
    for _, frames, is_context in rows:
        n = frames.shape[0]
        if is_context:
            latest = sorted(range(n - 1, -1, -step))
            picks.append(latest if max_columns is None else latest[-columns:])
        else:
            picks.append(list(range(step - 1, n, step)))
    return picks


def time_label(t: int, n_frames: int, is_context: bool, frame_minutes: float | None) -> str:
    """Frame t's time relative to the forecast start: '-10 min', '0 min (now)', '+5 min'; 't -1', 'lead 1'."""
    offset = t - n_frames + 1 if is_context else t + 1
    if not frame_minutes:
        return f"t {offset}" if is_context else f"lead {offset}"
    return f"{offset * frame_minutes:+.0f} min" if offset else "0 min (now)"


def _style(vil: bool, frames: list[np.ndarray]) -> dict:
    if vil:
        cmap, norm = vil_cmap()
        return {"cmap": cmap, "norm": norm, "origin": "upper"}
    limit = max(float(np.nanmax(np.abs(f))) for f in frames) or 1.0
    return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit, "origin": "lower"}


def _units(vil: bool) -> str:
    return "VIL (0–255)" if vil else "SST anomaly (°C)"


def plot_rows(path: str | Path, rows: list[Row], *, frame_minutes: float | None = 5, vil: bool = True,
              max_columns: int | None = 12, title: str = "") -> Path:
    """One figure, one row per entry of `rows`, its columns evenly spaced in time (`column_picks`), each panel
    titled with its time relative to the forecast start."""
    picks = column_picks(rows, max_columns)
    columns = max(len(p) for p in picks)
    figure = Figure(figsize=(1.1 * columns + 1.0, 1.2 * len(rows) + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    style = _style(vil, [frames for _, frames, _ in rows])
    image = None
    for r, ((label, frames, is_context), picked) in enumerate(zip(rows, picks)):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(picked):
                ax.axis("off")
                continue
            image = ax.imshow(frames[picked[c]], **style)
            ax.set_title(time_label(picked[c], frames.shape[0], is_context, frame_minutes), fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.9, pad=0.01, label=_units(vil))
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path, dpi=100)


def plot_sequences(path: str | Path, context: np.ndarray | None, target: np.ndarray, prediction: np.ndarray,
                   frame_minutes: float | None = 5, title: str = "", vil: bool = True,
                   max_columns: int = 12) -> Path:
    """One figure for one sample: rows input, observed (the target), forecast; arrays T×H×W in physical units."""
    rows = [("input", context, True)] if context is not None else []
    rows += [("observed", target, False), ("forecast", prediction, False)]
    return plot_rows(path, rows, frame_minutes=frame_minutes, vil=vil, max_columns=max_columns, title=title)


def plot_knowledge_rows(path: str | Path, context, target, rows, labels: list[str],
                        frame_minutes: float | None = None) -> Path:
    """One sample of `earthcast sample` (PreDiff's figure): every frame of the context, the target and each
    forecast row (tensors T×H×W×1 in VIL units)."""
    named: list[Row] = [("context", frames_of(context), True), ("target", frames_of(target), False)]
    named += [(label, frames_of(row), False) for label, row in zip(labels, rows)]
    return plot_rows(path, named, frame_minutes=frame_minutes, max_columns=None)


def write_rows_gif(path: str | Path, context, target, rows, labels: list[str], *, frame_minutes: float | None = None,
                   title: str = "", vil: bool = True, fps: float = 2.0) -> Path:
    """The observed field (the context, then the target) beside each forecast row, frame by frame; a forecast
    panel stays empty until its forecast starts, and the last frame is held a second before the loop restarts.
    Arrays or tensors T×H×W[×1] in physical units; written with matplotlib's Pillow writer."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    context, target = frames_of(context), frames_of(target)
    forecasts = [frames_of(row) for row in rows]
    observed = np.concatenate([context, target])
    n_context = context.shape[0]
    style = _style(vil, [observed])
    panels = 1 + len(forecasts)
    figure = Figure(figsize=(2.6 * panels + 0.8, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    images = []
    for ax, label in zip(axes, ["observed", *labels]):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=9)
        images.append(ax.imshow(observed[0], **style))
    blank = np.full_like(observed[0], np.nan)
    waiting = [ax.text(0.5, 0.5, "forecast starts\nat 0 min" if frame_minutes else "forecast starts\nafter t 0",
                       ha="center", va="center", fontsize=8, color="0.6", transform=ax.transAxes) for ax in axes[1:]]
    figure.suptitle(title.replace(" · ", "\n"), fontsize=8)  # one part per line: the panels are narrow
    clock = figure.text(0.45, 0.04, "", ha="center", fontsize=9)
    figure.subplots_adjust(left=0.02, right=0.86, top=0.74, bottom=0.11, wspace=0.05)
    colorbar = figure.colorbar(images[0], cax=figure.add_axes((0.88, 0.11, 0.025, 0.63)))
    colorbar.set_label(_units(vil), fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    order = list(range(len(observed))) + [len(observed) - 1] * math.ceil(fps)

    def draw(i: int):
        frame = order[i]
        images[0].set_data(observed[frame])
        lead = frame - n_context + 1
        for image, forecast in zip(images[1:], forecasts):
            image.set_data(forecast[lead - 1] if lead >= 1 else blank)
        for text in waiting:
            text.set_visible(lead < 1)
        is_context = lead < 1
        when = time_label(frame if is_context else lead - 1, n_context if is_context else target.shape[0],
                          is_context, frame_minutes)
        clock.set_text(when if when.startswith("0 min") else f"{when} ({'input' if is_context else 'forecast'})")
        return images

    animation = FuncAnimation(figure, draw, frames=len(order), blit=False)
    with AtomicFile(path, suffix=Path(path).suffix) as tmp:  # Pillow picks the format from the name
        animation.save(str(tmp), writer=PillowWriter(fps=fps), dpi=100)
    return Path(path)


def activity(target: np.ndarray, vil: bool = True) -> tuple[float, float]:
    """How much happens in a sample's observed hour, for ranking: VIL summed over its heavy pixels
    (≥ HEAVY_VIL), then the peak VIL; for other fields the mean and the peak of |target|."""
    target = np.nan_to_num(np.asarray(target, dtype=np.float64))
    if vil:
        return float(target[target >= HEAVY_VIL].sum()), float(target.max(initial=0.0))
    return float(np.abs(target).mean()), float(np.abs(target).max(initial=0.0))


def most_active(ds: xr.Dataset, n_samples: int, vil: bool = True) -> list[int]:
    """Indices of the `n_samples` most active samples (see `activity`), at most one per event when the file
    names events, most active first."""
    scores = [activity(ds["target"].isel(sample=i).values, vil) for i in range(ds.sizes["sample"])]
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i), reverse=True)
    events = [str(e) for e in ds["event_id"].values] if "event_id" in ds else None
    picked, seen = [], set()
    for i in order:
        if events is not None and events[i] in seen:
            continue
        picked.append(i)
        if events is not None:
            seen.add(events[i])
        if len(picked) == n_samples:
            break
    return picked


def sample_title(ds: xr.Dataset, i: int, vil: bool = True) -> str:
    """'<model> · <event type> event <id>, <date> · peak observed VIL <v>' from the file's metadata."""
    parts = [str(ds.attrs.get("model", "")).strip()]
    if "event_id" in ds:
        kind = str(ds["event_type"].values[i]).strip() if "event_type" in ds else ""
        event = f"{kind or 'random'} event {ds['event_id'].values[i]}"
        if "time_utc" in ds:
            event += f", {str(ds['time_utc'].values[i])[:10]}"
        if "seq_start" in ds:
            event += f" (window from frame {int(ds['seq_start'].values[i])})"
        parts.append(event)
    elif "init_month" in ds:
        parts.append(f"sample {i}, initialised in month {int(ds['init_month'].values[i])}")
    else:
        parts.append(f"sample {i}")
    if vil:
        parts.append(f"peak observed VIL {float(ds['target'].isel(sample=i).max()):.0f}")
    return " · ".join(p for p in parts if p)


def plot_forecast_file(predictions_nc: str | Path, out_dir: str | Path, n_samples: int = 2,
                       frame_minutes: float | None = 5, gif: bool = True) -> list[Path]:
    """Plot the most active samples of a stored forecast file (the deterministic prediction or member 0):
    sequence_<k>.png for the k-th most active, and with `gif` an animation of the most active, forecast.gif."""
    paths = []
    with xr.open_dataset(predictions_nc) as ds:
        vil = str(ds.attrs.get("dataset", "")).startswith("sevir")
        for k, i in enumerate(most_active(ds, n_samples, vil)):
            prediction = ds["prediction"].isel(sample=i)
            if "member" in prediction.dims:
                prediction = prediction.isel(member=0)
            context = ds["context"].isel(sample=i).values if "context" in ds else None
            target = ds["target"].isel(sample=i).values
            title = sample_title(ds, i, vil)
            paths.append(plot_sequences(Path(out_dir) / f"sequence_{k}.png", context, target, prediction.values,
                                        frame_minutes=frame_minutes, title=title, vil=vil))
            if gif and k == 0:
                paths.append(write_rows_gif(Path(out_dir) / "forecast.gif",
                                            context if context is not None else target[:0], target,
                                            [prediction.values], ["forecast"], frame_minutes=frame_minutes,
                                            title=title, vil=vil, fps=4.0))
    return paths
