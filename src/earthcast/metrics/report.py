"""What an evaluation leaves in its run directory, and the summary printed at the end of a command.

    write_evaluation   metrics.json, metrics_by_lead.csv, metrics_by_group.csv, plots/, report.md
    write_report       report.md with score tables and PNG plots (matplotlib Agg, no pyplot global state)
    print_summary      the headline scores next to persistence, and where the outputs are

Every headline score is shown next to the persistence/climatology reference computed on the same samples,
with its skill relative to them. The full per-lead/per-group tables are the CSV files; the report keeps the
headline columns so it stays readable. Every file is written atomically (earthcast.io).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from earthcast.io import save_figure, write_csv, write_json, write_text

REFERENCE_PREFIXES = ("persistence/", "climatology/")
#: lower is better: skill is 1 − model/reference (the MSE-skill-score form); for the rest model − reference
ERROR_METRICS = {"mse", "mae", "crps", "nino34_rmse", "mean_intensity_error"}
#: neither direction is better, or a count: no skill column
NEUTRAL_METRICS = re.compile(r"^(n_samples|n_samples_excluded|bias_.*|spread_skill)$")
#: left out of the summary table because a plot or the by-lead table shows them
DETAIL_METRICS = re.compile(r"^(rank_hist_\d+|nino34_corr_lead\d+)$")
#: columns of the by-lead / by-group tables that the report shows (prefixed reference versions included)
HEADLINE_COLUMNS = re.compile(
    r"^(lead|lead_minutes|group|n_samples|csi_m|csi_m_pool\d+|mse|mae|crps|spread_skill|"
    r"nino34_corr|nino34_corr_m|nino34_corr_wm|nino34_rmse)$"
)
THRESHOLD_CSI = re.compile(r"^csi_(\d+(?:\.\d+)?)$")
#: the scores the terminal summary shows first, in this order
HEADLINE_KEYS = ("csi_m", "csi_219", "csi_m_pool16", "mse", "mae", "crps", "nino34_corr_m", "nino34_corr_wm",
                 "nino34_rmse")


def write_evaluation(run_dir: str | Path, results: Mapping[str, Any], *, split: str, predictions: Path | None,
                     plot_samples: int, report: bool, frame_minutes: float | None,
                     about: Mapping[str, Any]) -> dict:
    """metrics.json (the split first, then the scores), the per-lead and per-group tables, sequence plots of
    the first `plot_samples` stored forecasts, and report.md. Returns what metrics.json holds."""
    run_dir = Path(run_dir)
    scores = {"split": split, **results["scores"]}
    write_json(run_dir / "metrics.json", scores)
    if results.get("by_lead") is not None:
        write_csv(run_dir / "metrics_by_lead.csv", results["by_lead"])
    if results.get("by_group") is not None and len(results["by_group"]):
        write_csv(run_dir / "metrics_by_group.csv", results["by_group"])
    plots = []
    if predictions is not None and plot_samples:
        from earthcast.viz import plot_forecast_file

        plots = plot_forecast_file(predictions, run_dir / "plots", n_samples=int(plot_samples),
                                   frame_minutes=frame_minutes)
    if report:
        write_report(run_dir, results["scores"], results.get("by_lead"), results.get("by_group"),
                     extra={"split": split, **about,
                            "sequence_plots": [str(p.relative_to(run_dir)) for p in plots]})
    return scores


def summary_keys(scores: Mapping[str, Any]) -> list[str]:
    """The headline scores present; scores with none of them (e.g. the PreDiff alignment stage's) show all of
    their own scalar scores instead of an empty table."""
    keys = [key for key in HEADLINE_KEYS if key in scores]
    return keys or sorted(k for k, v in scores.items()
                          if "/" not in k and (v is None or isinstance(v, (int, float))))


def print_summary(title: str, scores: Mapping[str, Any], run_dir: Path, outputs: Mapping[str, Path | None]) -> None:
    """The headline scores beside persistence's, then the run directory and the outputs that exist."""
    console = Console()
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("persistence", justify="right")
    for key in summary_keys(scores):
        value, ref = scores[key], scores.get(f"persistence/{key}")
        table.add_row(key, *("—" if v is None else f"{v:.4f}" for v in (value, ref)))
    console.print(table)
    console.print(f"run directory: {run_dir}")
    for label, path in outputs.items():
        if path is not None and Path(path).exists():
            console.print(f"  {label:<12} {path}")


def write_report(
    run_dir: str | Path,
    metrics: Mapping[str, Any],
    by_lead: pd.DataFrame | None = None,
    by_group: pd.DataFrame | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `run_dir/report.md` and `run_dir/plots/*.png`; return the report's path."""
    run_dir = Path(run_dir)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Evaluation report", ""]
    if extra:
        lines += ["## Run", "", *_markdown_table(["item", "value"], [[k, v] for k, v in extra.items()]), ""]
    lines += ["## Scores", "", *_summary_table(metrics), ""]
    lines += [
        "Skill columns: for error metrics (mse, mae, crps, rmse) 1 − model/reference, so 0 is no better than the "
        "reference and 1 is perfect; for scores (CSI, correlation, FSS, …) model − reference. The reference is "
        "scored on the same samples.",
        "",
    ]
    if by_lead is not None and not by_lead.empty:
        lines += ["## By lead time", "", *_frame_table(by_lead), ""]
    if by_group is not None and not by_group.empty:
        lines += ["## By group", "", *_frame_table(by_group), ""]
    plots = _plots(metrics, by_lead, plot_dir)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{title}](plots/{name})" for title, name in plots]
        lines.append("")
    return write_text(run_dir / "report.md", "\n".join(lines))


# ------------------------------------------------------------------------------------------------ tables
def _summary_table(metrics: Mapping[str, Any]) -> list[str]:
    base_keys = [key for key in metrics if "/" not in key and not DETAIL_METRICS.match(key)]
    references = [prefix for prefix in REFERENCE_PREFIXES if any(key.startswith(prefix) for key in metrics)]
    headers = ["metric", "model"]
    for prefix in references:
        name = prefix.rstrip("/")
        headers += [name, f"skill vs {name}"]
    rows = []
    for key in base_keys:
        row = [key, metrics[key]]
        for prefix in references:
            reference = metrics.get(prefix + key)
            row += [reference, _skill(key, metrics[key], reference) if f"{prefix}{key}" in metrics else None]
        rows.append(row)
    return _markdown_table(headers, rows)


def _skill(key: str, model: Any, reference: Any) -> float | None:
    if NEUTRAL_METRICS.match(key) or not _is_number(model) or not _is_number(reference):
        return None
    if key in ERROR_METRICS:
        return None if reference == 0 else 1.0 - float(model) / float(reference)
    return float(model) - float(reference)


def _frame_table(frame: pd.DataFrame) -> list[str]:
    columns = [column for column in frame.columns if HEADLINE_COLUMNS.match(column.split("/")[-1])]
    columns += [column for column in frame.columns if THRESHOLD_CSI.match(column)]
    return _markdown_table(columns, frame[columns].itertuples(index=False, name=None))


def _markdown_table(headers: list[str], rows: Any) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    return lines


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not _is_number(value):
        return str(value).replace("|", "\\|")
    if float(value).is_integer() and abs(float(value)) < 1e6:
        return str(int(value))
    return f"{float(value):.4g}"


def _is_number(value: Any) -> bool:
    try:
        return value is not None and not isinstance(value, str) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------- plots
def _plots(metrics: Mapping[str, Any], by_lead: pd.DataFrame | None, plot_dir: Path) -> list[tuple[str, str]]:
    made = []
    if by_lead is not None and not by_lead.empty:
        x_column = "lead_minutes" if "lead_minutes" in by_lead else "lead"
        x_label = "lead time (min)" if x_column == "lead_minutes" else "lead"
        thresholds = [column for column in by_lead.columns if THRESHOLD_CSI.match(column)]
        if thresholds:
            _line_plot(by_lead, x_column, x_label, thresholds, "CSI", "CSI vs lead time (dashed: persistence)",
                       plot_dir / "csi_vs_lead.png")
            made.append(("CSI vs lead time", "csi_vs_lead.png"))
        if "nino34_corr" in by_lead:
            _line_plot(by_lead, x_column, x_label, ["nino34_corr"], "correlation",
                       "Niño 3.4 correlation vs lead (dashed: persistence)", plot_dir / "nino34_corr_vs_lead.png")
            made.append(("Niño 3.4 correlation vs lead", "nino34_corr_vs_lead.png"))
        if "mse" in by_lead:
            _line_plot(by_lead, x_column, x_label, ["mse"], "MSE (normalised)", "MSE vs lead (dashed: persistence, dotted: climatology)",
                       plot_dir / "mse_vs_lead.png")
            made.append(("MSE vs lead", "mse_vs_lead.png"))
    ranks = sorted((int(key.rsplit("_", 1)[1]), value) for key, value in metrics.items()
                   if DETAIL_METRICS.match(key) and key.startswith("rank_hist_"))
    if ranks:
        _rank_histogram(ranks, plot_dir / "rank_histogram.png")
        made.append(("Rank histogram", "rank_histogram.png"))
    return made


def _line_plot(
    frame: pd.DataFrame, x_column: str, x_label: str, columns: list[str], y_label: str, title: str, path: Path
) -> None:
    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, column in enumerate(columns):
        color = f"C{index % 10}"
        axes.plot(frame[x_column], frame[column], marker="o", color=color, label=column)
        for style, prefix in zip(("--", ":"), REFERENCE_PREFIXES):
            if prefix + column in frame:
                # one legend entry per model line keeps many-threshold plots readable; the title names the styles
                label = prefix.rstrip("/") if len(columns) == 1 else "_nolegend_"
                axes.plot(frame[x_column], frame[prefix + column], style, color=color, label=label)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


def _rank_histogram(ranks: list[tuple[int, Any]], path: Path) -> None:
    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = [rank for rank, _ in ranks]
    frequencies = [float(value) if _is_number(value) else 0.0 for _, value in ranks]
    axes.bar(positions, frequencies, color="C0")
    axes.axhline(1.0 / len(ranks), color="k", linestyle="--", label="flat (calibrated)")
    axes.set_xlabel("rank of the observation among the members")
    axes.set_ylabel("relative frequency")
    axes.set_title("Rank histogram")
    axes.legend(fontsize="small")
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
