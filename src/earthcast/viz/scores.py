"""Score plots: scores against lead time with their bootstrap intervals, the rank histogram, and the headline
scores of many runs side by side (matplotlib Agg canvas, no pyplot global state)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from earthcast.io import save_figure

REFERENCE_PREFIXES = ("persistence/", "climatology/")
THRESHOLD_CSI = re.compile(r"^csi_(\d+(?:\.\d+)?)$")
RANK_KEY = re.compile(r"^rank_hist_(\d+)$")


def plot_report(metrics: Mapping[str, Any], by_lead: pd.DataFrame | None, plot_dir: Path) -> list[tuple[str, str]]:
    """The report's plots in `plot_dir`: (title, file name) of each one made."""
    made = []
    if by_lead is not None and not by_lead.empty:
        x_column = "lead_minutes" if "lead_minutes" in by_lead else "lead"
        x_label = "lead time (min)" if x_column == "lead_minutes" else "lead"
        thresholds = [column for column in by_lead.columns if THRESHOLD_CSI.match(column)]
        plots = [(thresholds, "CSI", "CSI vs lead time", "csi_vs_lead.png"),
                 (["nino34_corr"], "correlation", "Niño 3.4 correlation vs lead", "nino34_corr_vs_lead.png"),
                 (["mse"], "MSE (normalised)", "MSE vs lead", "mse_vs_lead.png")]
        for columns, y_label, title, name in plots:
            if columns and all(column in by_lead for column in columns):
                styles = "dashed: persistence" + (", dotted: climatology" if any(
                    f"climatology/{column}" in by_lead for column in columns) else "")
                bands = ", shaded: interval" if any(f"{c}_ci_low" in by_lead for c in columns) else ""
                _line_plot(by_lead, x_column, x_label, columns, y_label, f"{title} ({styles}{bands})",
                           plot_dir / name)
                made.append((title, name))
    ranks = sorted((int(match.group(1)), value) for key, value in metrics.items() if (match := RANK_KEY.match(key)))
    if ranks:
        plot_rank_histogram(ranks, plot_dir / "rank_histogram.png")
        made.append(("Rank histogram", "rank_histogram.png"))
    return made


def _line_plot(frame: pd.DataFrame, x_column: str, x_label: str, columns: list[str], y_label: str, title: str,
               path: Path) -> None:
    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, column in enumerate(columns):
        color = f"C{index % 10}"
        axes.plot(frame[x_column], frame[column], marker="o", color=color, label=column)
        if f"{column}_ci_low" in frame:
            axes.fill_between(frame[x_column], frame[f"{column}_ci_low"], frame[f"{column}_ci_high"], color=color,
                              alpha=0.2, linewidth=0)
        for style, prefix in zip(("--", ":"), REFERENCE_PREFIXES):
            if prefix + column in frame:
                # one legend entry per model line keeps many-threshold plots readable; the title names the styles
                label = prefix.rstrip("/") if len(columns) == 1 else "_nolegend_"
                axes.plot(frame[x_column], frame[prefix + column], style, color=color, label=label)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title, fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


def plot_rank_histogram(ranks: list[tuple[int, Any]], path: Path) -> None:
    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = [rank for rank, _ in ranks]
    frequencies = [float(value) if _finite(value) else 0.0 for _, value in ranks]
    axes.bar(positions, frequencies, color="C0")
    axes.axhline(1.0 / len(ranks), color="k", linestyle="--", label="flat (calibrated)")
    axes.set_xlabel("rank of the observation among the members")
    axes.set_ylabel("relative frequency")
    axes.set_title("Rank histogram")
    axes.legend(fontsize="small")
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


def plot_runs(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], path: Path) -> Path:
    """One panel per score: each run's value (in the rows' order) with its interval as an error bar.
    rows: {"label", <key>: value, <key>_ci: [low, high] or None}."""
    figure = Figure(figsize=(4.0 * len(keys), 0.9 + 0.35 * len(rows)))
    FigureCanvasAgg(figure)
    labels = [str(row["label"]) for row in rows]
    for index, key in enumerate(keys):
        axes = figure.add_subplot(1, len(keys), index + 1)
        for position, row in enumerate(rows):
            value = row.get(key)
            if not _finite(value):
                continue
            interval = row.get(f"{key}_ci")
            error = None
            if interval and None not in interval:
                error = [[value - interval[0]], [interval[1] - value]]
            axes.errorbar([value], [position], xerr=error, fmt="o", color="C0", capsize=3)
        axes.set_yticks(range(len(rows)), labels if index == 0 else [""] * len(rows))
        axes.invert_yaxis()
        axes.set_title(key)
        axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
