"""What an evaluation leaves in its run directory, and the summary printed at the end of a command.

    write_evaluation   metrics.json (scores, intervals, paired differences, protocol, model), the per-lead and
                       per-group tables with interval columns (by lead also as CF netCDF: metrics.nc),
                       replicates.nc, plots/, report.md, card.md
    write_report       report.md with score tables and PNG plots (matplotlib Agg, no pyplot global state)
    print_summary      the headline scores with their intervals next to persistence, and where the outputs are

Every headline score is shown with its bootstrap interval (earthcast.metrics.bootstrap) and next to the
persistence/climatology reference computed on the same samples, with its skill relative to them and the
paired interval of the difference. The full per-lead/per-group tables are the CSV files; the report keeps
the headline columns so it stays readable. Every file is written atomically (earthcast.io).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from earthcast.io import write_csv, write_json, write_text
from earthcast.metrics.bootstrap import MIN_UNITS, interval_columns
from earthcast.metrics.evaluation import Evaluation, protocol_warning
from earthcast.metrics.protocol import run_protocol

log = logging.getLogger("earthcast")

REFERENCE_PREFIXES = ("persistence/", "climatology/")
#: lower is better: skill is 1 − model/reference (the MSE-skill-score form); for the rest model − reference
ERROR_METRICS = {"mse", "mae", "crps", "nino34_rmse", "mean_intensity_error"}
#: neither direction is better, or a count: no skill column
NEUTRAL_METRICS = re.compile(r"^(n_samples|n_samples_excluded|frequency_bias_.*|spread_skill_ratio|mean_error)$")
#: left out of the summary table because a plot or the by-lead table shows them
DETAIL_METRICS = re.compile(r"^(rank_hist_\d+|nino34_corr_lead\d+)$")
#: columns of the by-lead / by-group tables that the report shows (prefixed reference versions included)
HEADLINE_COLUMNS = re.compile(
    r"^(lead|lead_minutes|group|n_samples|csi_m|csi_m_pool\d+|mse|mae|rmse|crps|spread_skill_ratio|"
    r"nino34_corr|nino34_corr_m|nino34_corr_wm|nino34_rmse)$"
)
THRESHOLD_CSI = re.compile(r"^csi_(\d+(?:\.\d+)?)$")
#: the scores the terminal summary shows first, in this order
HEADLINE_KEYS = ("csi_m", "csi_219", "csi_m_pool16", "mse", "mae", "crps", "nino34_corr_m", "nino34_corr_wm",
                 "nino34_rmse")


def write_evaluation(run_dir: str | Path, results: Mapping[str, Any], *, split: str, predictions: Path | None,
                     plot_samples: int, report: bool, frame_minutes: float | None,
                     about: Mapping[str, Any], record: Mapping[str, Any] | None = None,
                     compared: Sequence[Evaluation] = (), published: str | None = None) -> dict:
    """metrics.json (the split first, then the scores, then intervals, paired differences, protocol and model),
    the per-lead and per-group tables, replicates.nc, sequence plots of the first `plot_samples` stored
    forecasts, report.md and card.md. `record` describes the run (dataset, nan_policy, synthetic, model,
    recipe, data); `compared` are other evaluations to put beside this one (`compare=`), `published` a table
    of published.yaml. Returns what metrics.json holds, which is written last: a run directory that
    has metrics.json has all of them."""
    run_dir = Path(run_dir)
    record = {"split": split, **(record or {})}
    evaluation = _evaluation(results, split, record, about)
    if evaluation.replicates is not None:
        for table in ("by_lead", "by_group"):
            frame = getattr(evaluation, table)
            if frame is not None and not frame.empty:
                setattr(evaluation, table, interval_columns(frame, evaluation.replicates, table))
        evaluation.replicates.save(run_dir / "replicates.nc")
    warnings = [w for other in compared if (w := protocol_warning(evaluation.protocol, other.protocol,
                                                                  other.label)) is not None]
    for warning in warnings:
        log.warning(warning)
    published_rows = None
    if published:
        from earthcast.metrics.published import published_comparison

        published_rows = published_comparison(published, evaluation)
    scores = {"split": split, **results["scores"]}
    scores.update(_uncertainty(evaluation, compared))
    if evaluation.protocol is not None:
        scores["protocol"] = evaluation.protocol
    if evaluation.model:
        scores["model"] = evaluation.model
    if published_rows is not None:
        scores["published"] = published_rows
    if evaluation.by_lead is not None:
        write_csv(run_dir / "metrics_by_lead.csv", evaluation.by_lead)
        write_metrics_netcdf(run_dir / "metrics.nc", evaluation.by_lead, frame_minutes,
                             {"split": split, **{k: str(v) for k, v in about.items()}})
    if evaluation.by_group is not None and len(evaluation.by_group):
        write_csv(run_dir / "metrics_by_group.csv", evaluation.by_group)
    plots = []
    if predictions is not None and plot_samples:
        from earthcast.viz import plot_forecast_file

        plots = plot_forecast_file(predictions, run_dir / "plots", n_samples=int(plot_samples),
                                   frame_minutes=frame_minutes)
    if report:
        from earthcast.metrics.card import write_card

        extra = {"split": split, **about, "sequence_plots": [str(p.relative_to(run_dir)) for p in plots]}
        write_report(run_dir, results["scores"], evaluation.by_lead, evaluation.by_group, extra=extra,
                     evaluation=evaluation, compared=compared, warnings=warnings, published=published_rows)
        write_card(run_dir, evaluation, record, compared=compared, published=published_rows)
    write_json(run_dir / "metrics.json", scores)
    return scores


def _evaluation(results: Mapping[str, Any], split: str, record: Mapping[str, Any],
                about: Mapping[str, Any]) -> Evaluation:
    protocol = None
    if results.get("protocol") is not None:
        scored = dict(results["protocol"])
        if record.get("observations"):  # scored against other targets than the forecasts' own
            scored["observations"] = record["observations"]
        protocol = run_protocol(scored, dataset=str(record.get("dataset", about.get("dataset"))),
                                split=split, nan_policy=str(record.get("nan_policy", "fail")),
                                synthetic=bool(record.get("synthetic", False)))
    model = record.get("model") or {"name": about.get("model")}
    return Evaluation(str(model.get("name")), dict(results["scores"]), results.get("by_lead"),
                      results.get("by_group"), results.get("replicates"), protocol, dict(model))


def _uncertainty(evaluation: Evaluation, compared: Sequence[Evaluation]) -> dict[str, Any]:
    """metrics.json's bootstrap settings, intervals and paired differences (empty without replicates)."""
    if evaluation.replicates is None:
        return {}
    attrs = evaluation.replicates.data.attrs
    out: dict[str, Any] = {"bootstrap": {**evaluation.replicates.settings.describe(), "unit": attrs["unit"],
                                         "units": int(attrs["units"])},
                           "intervals": evaluation.intervals()}
    paired = dict(evaluation.reference_differences())
    for other in compared:
        paired[f"compare/{other.label}"] = evaluation.differences_to(other)
    if paired:
        out["paired"] = paired
    return out


def write_metrics_netcdf(path: Path, by_lead: pd.DataFrame, frame_minutes: float | None, attrs: Mapping) -> Path:
    """The by-lead table as CF-1.10 netCDF: `score(metric, lead_time)`, lead_time a duration where the frame
    interval is known (else a count of frames), `metric_name(metric)` the names of metrics_by_lead.csv
    (`ds.set_index(metric="metric_name").score.sel(metric="mse")`)."""
    import numpy as np
    import xarray as xr

    from earthcast.io import AtomicFile

    metrics = [c for c in by_lead.columns if c not in ("lead", "lead_minutes")]
    leads = by_lead["lead"].to_numpy()
    if frame_minutes:
        lead = ("lead_time", leads * float(frame_minutes),
                {"units": "minutes", "standard_name": "forecast_period", "long_name": "forecast lead time",
                 "dtype": "timedelta64[ns]"})
    else:
        lead = ("lead_time", leads, {"units": "1", "long_name": "forecast lead time in frames"})
    values = by_lead[metrics].to_numpy(dtype=np.float64).T if metrics else np.zeros((0, len(leads)))
    dataset = xr.Dataset({"score": (("metric", "lead_time"), values, {
        "long_name": "score by lead time",
        "comment": "units vary by metric: the variable's for mae/rmse/crps, squared for mse, 1 for skill scores"})},
                         # the names are an auxiliary coordinate: a CF coordinate variable must be numeric
                         coords={"metric_name": ("metric", np.array(metrics, dtype=object),
                                                 {"long_name": "score name, as in metrics_by_lead.csv"}),
                                 "lead_time": lead},
                         attrs={"Conventions": "CF-1.10 earthcast-metrics-1", "title": "earthcast scores by lead time",
                                "history": f"{pd.Timestamp.now('UTC'):%Y-%m-%dT%H:%M:%SZ} written by earthcast",
                                **attrs})
    with AtomicFile(path, suffix=".nc") as tmp:
        dataset.to_netcdf(tmp, encoding={"lead_time": {"dtype": "float64", "_FillValue": None},
                                         "score": {"_FillValue": np.nan}})
    return path


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
    intervals = scores.get("intervals") or {}
    level = (scores.get("bootstrap") or {}).get("level")
    if intervals:
        table.add_column(f"{level:.0%} interval", justify="right")
    table.add_column("persistence", justify="right")
    for key in summary_keys(scores):
        value, ref = scores[key], scores.get(f"persistence/{key}")
        cells = ["—" if value is None else f"{value:.4f}"]
        if intervals:
            cells.append(format_interval(intervals.get(key)))
        cells.append("—" if ref is None else f"{ref:.4f}")
        table.add_row(key, *cells)
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
    evaluation: Evaluation | None = None,
    compared: Sequence[Evaluation] = (),
    warnings: Sequence[str] = (),
    published: Mapping[str, Any] | None = None,
) -> Path:
    """Write `run_dir/report.md` and `run_dir/plots/*.png`; return the report's path."""
    from earthcast.viz.scores import plot_report

    run_dir = Path(run_dir)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Evaluation report", "", "What the model is, where it fails and its limitations: "
             "[the forecast card](card.md).", ""]
    if extra:
        lines += ["## Run", "", *markdown_table(["item", "value"], [[k, v] for k, v in extra.items()]), ""]
    if evaluation is not None and evaluation.protocol is not None:
        lines += ["## Protocol", "", f"Fingerprint `{evaluation.protocol['fingerprint']}` (earthcast.metrics."
                  "protocol): equal fingerprints mean the same samples scored the same way.", "",
                  *markdown_table(["item", "value"], [[k, v] for k, v in evaluation.protocol.items()
                                                      if k != "fingerprint"]), ""]
    lines += ["## Scores", "", *_summary_table(metrics, evaluation), ""]
    lines += [
        "Skill columns: for error metrics (mse, mae, crps, rmse) 1 − model/reference, so 0 is no better than the "
        "reference and 1 is perfect; for scores (CSI, correlation, FSS, …) model − reference. The reference is "
        "scored on the same samples.",
        "",
    ]
    if evaluation is not None and evaluation.replicates is not None:
        lines += [f"Intervals: {interval_sentence(evaluation)} Δ columns are model − reference with the paired "
                  "interval (both resampled alike).", ""]
    for other in compared:
        lines += _compared_section(evaluation, other, warnings)
    if published is not None:
        lines += published_section(published)
    if by_lead is not None and not by_lead.empty:
        lines += ["## By lead time", "", *_frame_table(by_lead), ""]
    if by_group is not None and not by_group.empty:
        lines += ["## By group", "", *_frame_table(by_group), ""]
    plots = plot_report(metrics, by_lead, plot_dir)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{title}](plots/{name})" for title, name in plots]
        lines.append("")
    return write_text(run_dir / "report.md", "\n".join(lines))


# ------------------------------------------------------------------------------------------------ tables
def _summary_table(metrics: Mapping[str, Any], evaluation: Evaluation | None = None) -> list[str]:
    base_keys = [key for key in metrics if "/" not in key and not DETAIL_METRICS.match(key)
                 and (metrics[key] is None or _is_number(metrics[key]))]
    references = [prefix for prefix in REFERENCE_PREFIXES if any(key.startswith(prefix) for key in metrics)]
    intervals = evaluation.intervals() if evaluation is not None else {}
    paired = evaluation.reference_differences() if evaluation is not None and intervals else {}
    headers = ["metric", "model"] + (["interval"] if intervals else [])
    for prefix in references:
        name = prefix.rstrip("/")
        headers += [name, f"skill vs {name}"] + ([f"Δ vs {name} [interval]"] if name in paired else [])
    rows = []
    for key in base_keys:
        row = [key, metrics[key]] + ([format_interval(intervals.get(key))] if intervals else [])
        for prefix in references:
            reference = metrics.get(prefix + key)
            row += [reference, _skill(key, metrics[key], reference) if f"{prefix}{key}" in metrics else None]
            name = prefix.rstrip("/")
            if name in paired:
                row.append(format_difference(paired[name].get(key)))
        rows.append(row)
    return markdown_table(headers, rows)


def _compared_section(evaluation: Evaluation | None, other: Evaluation, warnings: Sequence[str]) -> list[str]:
    lines = [f"## Compared with {other.label}", "", f"Source: `{other.extra.get('path', other.label)}`.", ""]
    warning = next((w for w in warnings if w.startswith(f"protocol differs from {other.label}:")), None)
    if warning:
        lines += [f"**Warning**: {warning}. Differences below are not paired.", ""]
    if evaluation is None:
        return lines
    pairs = evaluation.differences_to(other)
    rows = [[key, evaluation.scores.get(key), format_interval(evaluation.interval(key)), other.scores.get(key),
             format_interval(other.interval(key)), format_difference(value)] for key, value in pairs.items()
            if not DETAIL_METRICS.match(key)]
    return lines + [*markdown_table(["metric", "ours", "interval", other.label, "interval", "Δ ours − theirs"],
                                    rows), ""]


def published_section(published: Mapping[str, Any]) -> list[str]:
    lines = [f"## Published: {published['name']}", "", f"{published['citation']}", ""]
    if published["protocol_differences"]:
        lines += ["Known protocol differences (ours vs the paper's): "
                  + "; ".join(published["protocol_differences"]) + ".", ""]
    rows = [[row["model"], row["score"], row["published"], row["ours"], format_interval(row["interval"]),
             {True: "yes", False: "no", None: "–"}[row["covered"]]] for row in published["rows"]]
    return lines + [*markdown_table(["published model", "score", "published", "ours", "our interval",
                                     "covered"], rows), ""]


def interval_sentence(evaluation: Evaluation) -> str:
    settings, attrs = evaluation.replicates.settings, evaluation.replicates.data.attrs
    return (f"{settings.level:.0%} percentile bootstrap over {settings.replicates} resamples of whole "
            f"{attrs['unit']} — {int(attrs['units'])} of them — with seed {settings.seed}; none for rows "
            f"from fewer than {MIN_UNITS}.")


def format_interval(interval: Sequence[float | None] | None) -> str:
    if not interval or None in interval:
        return "–"
    return f"[{_cell(interval[0])}, {_cell(interval[1])}]"


def format_difference(pair: Mapping[str, Any] | None) -> str:
    if not pair or pair.get("difference") is None:
        return "–"
    interval = pair.get("interval")
    return f"{pair['difference']:+.4g}" + (f" {format_interval(interval)}" if interval else "")


def _skill(key: str, model: Any, reference: Any) -> float | None:
    if NEUTRAL_METRICS.match(key) or not _is_number(model) or not _is_number(reference):
        return None
    if key in ERROR_METRICS:
        return None if reference == 0 else 1.0 - float(model) / float(reference)
    return float(model) - float(reference)


def _frame_table(frame: pd.DataFrame) -> list[str]:
    """The headline columns; a score with interval columns is shown as 'value [low, high]'."""
    columns = [column for column in frame.columns if HEADLINE_COLUMNS.match(column.split("/")[-1])]
    columns += [column for column in frame.columns if THRESHOLD_CSI.match(column)]
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
            if low is not None and _is_number(row[column]) and _is_number(low) and _is_number(high):
                cells.append(f"{_cell(row[column])} {format_interval([low, high])}")
            else:
                cells.append(row[column])
        rows.append(cells)
    return markdown_table(columns, rows)


def markdown_table(headers: list[str], rows: Any) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    return lines


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, default=str)
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
