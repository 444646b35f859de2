"""Input / target / forecast sequence figures, and an animation of one forecast.

`plot_forecast_file` draws the most active samples of a stored forecast file (predictions.nc): the samples
whose observed hour holds the most heavy precipitation, one per event, so the figures show storms rather
than empty fields, each titled with its own event.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from earthcast.viz.vil_colormap import vil_cmap  # noqa: E402

#: VIL from which a pixel counts as heavy precipitation when ranking samples by activity (a SEVIR threshold)
HEAVY_VIL = 133.0


def _step(n_lead: int, max_columns: int) -> int:
    return max(1, math.ceil(n_lead / max_columns))


def _lead_picks(n: int, step: int) -> list[int]:
    """Leads step, 2·step, … (indices into the forecast frames)."""
    return list(range(step - 1, n, step))


def _context_picks(n: int, step: int, count: int) -> list[int]:
    """The last `count` input frames at the same spacing, ending with the latest."""
    return sorted(range(n - 1, -1, -step))[-count:]


def _style(vil: bool, target: np.ndarray) -> dict:
    if vil:
        cmap, norm = vil_cmap()
        return {"cmap": cmap, "norm": norm}
    limit = float(np.nanmax(np.abs(target))) or 1.0
    return {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}


def _save(fig, path: Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, **kwargs)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_sequences(path: str | Path, context: np.ndarray | None, target: np.ndarray, prediction: np.ndarray,
                   frame_minutes: float | None = 5, title: str = "", vil: bool = True,
                   max_columns: int = 12) -> Path:
    """One figure for one sample: rows input, observed (target), forecast; arrays T×H×W in physical units.

    Columns are evenly spaced in time: leads step, 2·step, … and as many inputs at the same spacing, ending
    at the latest frame (0 min), with step the smallest that fits `max_columns` leads."""
    n_context = 0 if context is None else context.shape[0]
    step = _step(target.shape[0], max_columns)
    leads = _lead_picks(target.shape[0], step)
    rows = [("input", context, _context_picks(n_context, step, len(leads)), True)] if context is not None else []
    rows += [("observed", target, leads, False), ("forecast", prediction, leads, False)]
    columns = max(len(r[2]) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns + 1.0, 1.2 * len(rows) + 0.4),
                             squeeze=False, layout="constrained")
    style = _style(vil, target)
    image = None
    for row, (label, frames, picks, is_input) in enumerate(rows):
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
                ax.set_title(f"{offset:+.0f} min" if offset else "0 min (now)", fontsize=7)
            else:
                ax.set_title(f"{'t' if is_input else 'lead'} {t - frames.shape[0] + 1 if is_input else t + 1}",
                             fontsize=7)
        axes[row, 0].set_ylabel(label, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.9, pad=0.01, label="VIL (0–255)" if vil else "SST anomaly (°C)")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path, dpi=100)


def write_forecast_gif(path: str | Path, context: np.ndarray | None, target: np.ndarray, prediction: np.ndarray,
                       frame_minutes: float | None = 5, title: str = "", vil: bool = True,
                       fps: float = 4.0) -> Path:
    """Animated GIF of one sample: the observed field (inputs, then the target) beside the forecast, frame by
    frame; the forecast panel stays empty until the forecast starts. Written with matplotlib's Pillow writer."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    context = np.zeros((0, *target.shape[1:]), target.dtype) if context is None else context
    observed = np.concatenate([context, target])
    n_context = context.shape[0]
    style = _style(vil, target)
    fig, axes = plt.subplots(1, 2, figsize=(6.0, 3.6))
    images = []
    for ax, label in zip(axes, ("observed", "forecast")):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=9)
        images.append(ax.imshow(observed[0], origin="upper" if vil else "lower", **style))
    waiting = axes[1].text(0.5, 0.5, "forecast starts\nat 0 min", ha="center", va="center", fontsize=8,
                           color="0.6", transform=axes[1].transAxes)
    fig.suptitle(title.replace(" · ", "\n"), fontsize=8)  # one part per line: the panels are narrow
    clock = fig.text(0.45, 0.04, "", ha="center", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.86, top=0.74, bottom=0.11, wspace=0.05)
    colorbar = fig.colorbar(images[0], cax=fig.add_axes((0.88, 0.11, 0.025, 0.63)))
    colorbar.set_label("VIL (0–255)" if vil else "SST anomaly (°C)", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    # hold the last frame a little longer before the loop restarts
    order = list(range(len(observed))) + [len(observed) - 1] * int(fps)

    def draw(i: int):
        frame = order[i]
        images[0].set_data(observed[frame])
        lead = frame - n_context + 1
        forecasting = lead >= 1
        images[1].set_data(prediction[lead - 1] if forecasting else np.full_like(observed[0], np.nan))
        waiting.set_visible(not forecasting)
        when = f"{lead * frame_minutes:+.0f} min" if frame_minutes else f"{'lead' if forecasting else 't'} {lead}"
        clock.set_text(f"{when} ({'forecast' if forecasting else 'input'})" if lead else "0 min (now)")
        return images

    animation = FuncAnimation(fig, draw, frames=len(order), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    animation.save(str(tmp), writer=PillowWriter(fps=fps), dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


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
        vil = "lat" not in ds.dims
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
                paths.append(write_forecast_gif(Path(out_dir) / "forecast.gif", context, target, prediction.values,
                                                frame_minutes=frame_minutes, title=title, vil=vil))
    return paths
