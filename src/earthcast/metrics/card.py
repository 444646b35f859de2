"""card.md: a forecast card for every eval/train run — what the model is, what it was scored on and how, its
scores with intervals by lead, threshold and group, where it is worse than persistence or a compared
forecast (largest gaps first), ensemble calibration, and limitations stated from the numbers.

Every statement in the card is computed from the run's own scores; the rules that turn numbers into
sentences are the constants below. A gap counts as established when its paired interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from earthcast import __version__
from earthcast.io import write_text
from earthcast.metrics.evaluation import Evaluation, direction, excludes_zero, finite
from earthcast.metrics.report import (
    format_difference,
    format_interval,
    interval_sentence,
    markdown_table,
    published_section,
)

#: frequency bias below / above these is stated as losing / inflating intensity
BIAS_LOW, BIAS_HIGH = 0.5, 2.0
#: spread/skill outside this range is stated as under- / over-dispersive
SPREAD_SKILL_RANGE = (0.8, 1.2)
#: a group with fewer samples is flagged as too small to rank
SMALL_GROUP = 30
#: rows listed under "where it is worse"
WORST_ROWS = 10
#: Niño 3.4 correlation below this is stated as the end of useful skill
USEFUL_CORRELATION = 0.5
HEADLINE = ("csi_m", "csi_m_pool4", "csi_m_pool16", "mse", "mae", "crps", "spread_skill_ratio", "nino34_corr_m",
            "nino34_corr_wm", "nino34_rmse", "mean_intensity_error")
#: scores compared row by row in "where it is worse"
GAP_SCORES = ("csi_m", "mse", "crps", "nino34_corr", "nino34_rmse", "nino34_corr_m")
LEAD_SCORES = ("csi_m", "mse", "crps", "spread_skill_ratio", "nino34_corr", "nino34_rmse")
GROUP_SCORES = ("csi_m", "mse", "crps", "nino34_corr_m", "nino34_rmse")
SEASONS = ("DJF", "MAM", "JJA", "SON")


def write_card(run_dir: str | Path, evaluation: Evaluation, record: Mapping[str, Any],
               compared: Sequence[Evaluation] = (), published: Mapping[str, Any] | None = None) -> Path:
    lines = card_lines(evaluation, record, compared, published)
    return write_text(Path(run_dir) / "card.md", "\n".join(lines) + "\n")


def card_lines(evaluation: Evaluation, record: Mapping[str, Any], compared: Sequence[Evaluation] = (),
               published: Mapping[str, Any] | None = None) -> list[str]:
    protocol = evaluation.protocol or {}
    split = protocol.get("split", record.get("split", "?"))
    data = f"the {split} split of {protocol.get('dataset', record.get('dataset', '?'))}"
    lines = [f"# Forecast card: {evaluation.label}", "",
             f"Scored by earthcast {__version__} on {data}"
             + (" (a synthetic twin)" if protocol.get("synthetic") else "") + ". Numbers: [metrics.json](metrics.json),"
             " [by lead](metrics_by_lead.csv), [by group](metrics_by_group.csv); tables and plots: "
             "[report.md](report.md).", ""]
    lines += _model_section(evaluation.model or {}, record)
    lines += _protocol_section(protocol, record)
    lines += _scores_section(evaluation)
    lines += _lead_section(evaluation)
    lines += _threshold_section(evaluation)
    lines += _group_section(evaluation)
    gaps = worst_rows(evaluation, compared)
    lines += _gaps_section(gaps, evaluation, compared)
    lines += _calibration_section(evaluation)
    if published is not None:
        lines += published_section(published)
    lines += ["## Limitations", "", *[f"- {item}" for item in limitations(evaluation, gaps, published)], ""]
    return lines


# ------------------------------------------------------------------------------------------------ sections
def _model_section(model: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    rows = [[key, value] for key, value in model.items()]
    rows += [[key, value] for key, value in (record.get("model_facts") or {}).items()]
    recipe = record.get("recipe")
    lines = ["## Model", "", *markdown_table(["item", "value"], rows), "", "## Recipe", ""]
    if recipe:
        lines += markdown_table(["item", "value"], [[key, value] for key, value in recipe.items()])
    else:
        lines.append("Not known here: the forecasts were scored from a stored file.")
    return lines + [""]


def _protocol_section(protocol: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    lines = ["## Data and protocol", ""]
    if record.get("data"):
        lines += [*markdown_table(["data", "value"], [[k, v] for k, v in record["data"].items()]), ""]
    if protocol:
        lines += [f"Protocol fingerprint `{protocol.get('fingerprint')}`: runs with equal fingerprints scored the "
                  "same samples the same way.", "",
                  *markdown_table(["protocol", "value"], [[k, v] for k, v in protocol.items() if k != "fingerprint"]),
                  ""]
    return lines


def _scores_section(evaluation: Evaluation) -> list[str]:
    scores = evaluation.scores
    paired = evaluation.reference_differences()
    references = [name for name in ("persistence", "climatology") if any(k.startswith(f"{name}/") for k in scores)]
    headers = ["score", "model"] + [name for name in references] + [f"Δ vs {name}" for name in references]
    rows = []
    for key in [k for k in HEADLINE if k in scores]:
        row = [key, _with_interval(evaluation, key)]
        row += [_with_interval(evaluation, f"{name}/{key}") for name in references]
        row += [format_difference(paired.get(name, {}).get(key)) for name in references]
        rows.append(row)
    lines = ["## Scores", "", *markdown_table(headers, rows), ""]
    if evaluation.replicates is not None:
        lines += [f"Intervals: {interval_sentence(evaluation)} Δ = model − reference, interval paired (both "
                  "resampled alike).", ""]
    else:
        lines += ["No intervals: the run had bootstrap.replicates=0.", ""]
    return lines


def _lead_section(evaluation: Evaluation) -> list[str]:
    frame = evaluation.by_lead
    if frame is None or frame.empty:
        return []
    lead = "lead_minutes" if "lead_minutes" in frame else "lead"
    thresholds = [c for c in frame.columns if c.startswith("csi_") and c[4:].replace(".", "").isdigit()]
    columns = [c for c in (*LEAD_SCORES[:1], *thresholds, *LEAD_SCORES[1:]) if c in frame]
    return ["## By lead time", "", *_frame_with_intervals(frame, [lead, *columns]), ""]


def _threshold_section(evaluation: Evaluation) -> list[str]:
    labels = [key[4:] for key in evaluation.scores if key.startswith("csi_") and key[4:].replace(".", "").isdigit()]
    if not labels:
        return []
    names = ("csi", "pod", "sucr", "far", "frequency_bias", "hss")
    rows = [[label, *(_with_interval(evaluation, f"{name}_{label}") for name in names),
             evaluation.scores.get(f"persistence/csi_{label}")] for label in labels]
    return ["## By threshold (all leads)", "",
            *markdown_table(["threshold", *names, "persistence csi"], rows), ""]


def _group_section(evaluation: Evaluation) -> list[str]:
    frame = evaluation.by_group
    if frame is None or frame.empty:
        return []
    columns = ["group", "n_samples", *(["n_units"] if "n_units" in frame else []),
               *[c for c in GROUP_SCORES if c in frame]]
    columns += [f"persistence/{c}" for c in GROUP_SCORES if f"persistence/{c}" in frame][:1]
    title = "By initialisation month" if "nino34_corr_m" in frame else "By event type and season"
    return [f"## {title}", "", *_frame_with_intervals(frame, columns), ""]


def _gaps_section(gaps: pd.DataFrame, evaluation: Evaluation, compared: Sequence[Evaluation]) -> list[str]:
    against = [*evaluation.reference_differences(), *[other.label for other in compared]]
    lines = [f"## Where it is worse than {' or '.join(against) or 'a reference'}", ""]
    if gaps.empty:
        return lines + ["Nowhere in the rows scored: every lead and group is at least as good as the references "
                        "(see the tables above for the size of the margins).", ""]
    lines += ["Largest gaps first (relative to the reference's value); 'established' when the paired interval "
              "excludes 0.", ""]
    rows = [[row.where, row.score, row.against, row.model, row.reference,
             format_difference({"difference": row.difference, "interval": _interval(row)}),
             f"{row.relative:.0%}", "yes" if excludes_zero(_interval(row)) else "no"]
            for row in gaps.head(WORST_ROWS).itertuples()]
    more = f"{len(gaps) - WORST_ROWS} more rows are worse by smaller margins." if len(gaps) > WORST_ROWS else ""
    return lines + [*markdown_table(["where", "score", "against", "model", "reference", "Δ [interval]",
                                     "relative gap", "established"], rows), "", *([more, ""] if more else [])]


def _calibration_section(evaluation: Evaluation) -> list[str]:
    scores = evaluation.scores
    if "spread_skill_ratio" not in scores:
        return []
    ranks = [scores[k] for k in sorted((k for k in scores if k.startswith("rank_hist_")), key=lambda k: int(k[10:]))]
    lines = ["## Ensemble calibration", "",
             f"Spread/skill {_with_interval(evaluation, 'spread_skill_ratio')} (1 = calibrated; Fortin et al. 2014). "
             f"Rank histogram (observation's rank among the members, flat = {1 / max(len(ranks), 1):.3f}): "
             + ", ".join(f"{value:.3f}" for value in ranks if finite(value)) + ". Plot: "
             "[rank_histogram.png](plots/rank_histogram.png).", ""]
    frame = evaluation.by_lead
    if frame is not None and "spread_skill_ratio" in frame:
        lead = "lead_minutes" if "lead_minutes" in frame else "lead"
        lines += [*_frame_with_intervals(frame, [lead, "spread_skill_ratio", "crps"]), ""]
    return lines


# -------------------------------------------------------------------------------------------- the numbers
def worst_rows(evaluation: Evaluation, compared: Sequence[Evaluation] = ()) -> pd.DataFrame:
    """Every lead, group and threshold row where the model is worse than persistence/climatology or a compared
    forecast on a GAP_SCORES score (or a per-threshold CSI), largest relative gap first."""
    parts = []
    sources = [(evaluation, name, f"{name}/") for name in ("persistence", "climatology")]
    sources += [(other, other.label, "") for other in compared]
    for other, name, prefix in sources:
        for table, describe in (("by_lead", _lead_label), ("by_group", _group_label)):
            frame = evaluation.row_differences(other, table, prefix)
            if frame.empty:
                continue
            frame = frame[frame["score"].isin(GAP_SCORES) | frame["score"].str.match(r"^csi_\d+(\.\d+)?$")]
            frame = frame.assign(where=[describe(evaluation, row) for row in frame.iloc[:, 0]], against=name)
            parts.append(frame.drop(columns=frame.columns[0]))
        parts.append(_threshold_rows(evaluation, other, name, prefix))
    if not parts:
        return pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True)
    if rows.empty:
        return rows
    sign = rows["score"].map(direction)
    worse_by = -sign * rows["difference"]
    rows = rows.assign(relative=worse_by / rows["reference"].abs().where(rows["reference"] != 0))
    rows = rows[(worse_by > 0) & rows["relative"].notna()]
    return rows.sort_values("relative", ascending=False, kind="stable").reset_index(drop=True)


def _threshold_rows(evaluation: Evaluation, other: Evaluation, name: str, prefix: str) -> pd.DataFrame:
    if other is evaluation:
        pairs = evaluation.reference_differences().get(name, {})
    else:
        pairs = evaluation.differences_to(other)
    rows = []
    for key, pair in pairs.items():
        if not (key.startswith("csi_") and key[4:].replace(".", "").isdigit()) or pair["difference"] is None:
            continue
        interval = pair["interval"] or [math.nan, math.nan]
        reference = (evaluation if other is evaluation else other).scores.get(f"{prefix}{key}")
        rows.append({"score": key, "model": evaluation.scores[key], "reference": reference,
                     "difference": pair["difference"], "ci_low": interval[0], "ci_high": interval[1],
                     "where": "all leads", "against": name})
    return pd.DataFrame(rows)


def limitations(evaluation: Evaluation, gaps: pd.DataFrame, published: Mapping[str, Any] | None) -> list[str]:
    """Statements of what the model cannot do or what the numbers cannot say, each with its numbers."""
    found: list[str] = []
    scores, protocol, frame = evaluation.scores, evaluation.protocol or {}, evaluation.by_lead
    if protocol.get("synthetic"):
        found.append("Scored on a synthetic twin: the numbers check the pipeline and rank settings on that twin; "
                     "they say nothing about skill on real observations.")
    if frame is not None and not frame.empty:
        found += _intensity_statements(evaluation, frame)
        found += _correlation_statements(frame)
    established = gaps[[excludes_zero(_interval(row)) for row in gaps.itertuples()]] if not gaps.empty else gaps
    for row in established.head(3).itertuples():
        found.append(f"Worse than {row.against} — {row.where}, {row.score}: {_number(row.model)} vs "
                     f"{_number(row.reference)}, Δ {format_difference({'difference': row.difference, 'interval': _interval(row)})}.")
    for name, pairs in evaluation.reference_differences().items():
        key = next((k for k in HEADLINE if k in pairs and direction(k)), None)
        if key and pairs[key]["interval"] and not excludes_zero(pairs[key]["interval"]):
            found.append(f"Overall {key} is not distinguishable from {name}'s: Δ {format_difference(pairs[key])}.")
    for label in [k[4:] for k in scores if k.startswith("csi_") and k[4:].replace(".", "").isdigit()]:
        if scores.get(f"csi_{label}") is None:
            found.append(f"Threshold {label} was neither forecast nor observed: its CSI is undefined and left out "
                         "of CSI-M.")
        elif scores[f"csi_{label}"] == 0:
            found.append(f"Never hits events ≥ {label}: CSI 0 (POD {_number(scores.get(f'pod_{label}'))}).")
    found += _small_group_statements(evaluation)
    spread = scores.get("spread_skill_ratio")
    if finite(spread) and not SPREAD_SKILL_RANGE[0] <= spread <= SPREAD_SKILL_RANGE[1]:
        kind = "under-dispersive (too confident)" if spread < SPREAD_SKILL_RANGE[0] else "over-dispersive"
        found.append(f"The ensemble is {kind}: spread/skill {_with_interval(evaluation, 'spread_skill_ratio')}.")
    if published is not None and published["protocol_differences"]:
        found.append(f"Not directly comparable with {published['name']}: "
                     + "; ".join(published["protocol_differences"][:4]) + ".")
    if not found:
        found.append("None stated from these numbers; read the by-lead and by-group tables for the margins.")
    return found


def _intensity_statements(evaluation: Evaluation, frame: pd.DataFrame) -> list[str]:
    lead = "lead_minutes" if "lead_minutes" in frame else "lead"
    unit = " min" if lead == "lead_minutes" else ""
    found = []
    labels = [c[15:] for c in frame.columns
              if c.startswith("frequency_bias_") and c[15:].replace(".", "").isdigit()]
    for label in sorted(labels, key=float):
        bias = frame[f"frequency_bias_{label}"]
        for low, verb in ((True, "Loses intensity at"), (False, "Inflates intensity at")):
            off = bias.lt(BIAS_LOW) if low else bias.gt(BIAS_HIGH)
            # the first lead from which every defined bias stays off
            start = next((i for i in range(len(bias)) if off.iloc[i] and all(
                off.iloc[j] or not finite(bias.iloc[j]) for j in range(i, len(bias)))), None)
            if start is None:
                continue
            where = "at every lead" if start == 0 else f"from {_number(frame[lead].iloc[start])}{unit} on"
            last = max(j for j in range(len(bias)) if finite(bias.iloc[j]))
            found.append(f"{verb} ≥ {label} {where}: frequency bias {bias.iloc[start]:.2f} at "
                         f"{_number(frame[lead].iloc[start])}{unit}, {bias.iloc[last]:.2f} at "
                         f"{_number(frame[lead].iloc[last])}{unit}.")
            return found  # the lowest threshold affected says the most: the higher ones usually follow
    return found


def _correlation_statements(frame: pd.DataFrame) -> list[str]:
    if "nino34_corr" not in frame:
        return []
    corr = frame["nino34_corr"]
    below = [i for i in range(len(corr)) if finite(corr.iloc[i]) and corr.iloc[i] < USEFUL_CORRELATION]
    if not below:
        return []
    return [f"Niño 3.4 correlation falls below {USEFUL_CORRELATION} at index lead {int(frame['lead'].iloc[below[0]])} "
            f"({corr.iloc[below[0]]:.2f})."]


def _small_group_statements(evaluation: Evaluation) -> list[str]:
    frame = evaluation.by_group
    if frame is None or frame.empty or "n_samples" not in frame:
        return []
    small = frame[frame["n_samples"] < SMALL_GROUP]
    if small.empty:
        return []
    names = ", ".join(f"{row.group} (n={row.n_samples})" for row in small.itertuples())
    return [f"Groups with fewer than {SMALL_GROUP} samples — {names} — have wide intervals; do not rank them."]


# ------------------------------------------------------------------------------------------------ helpers
def _lead_label(evaluation: Evaluation, lead: Any) -> str:
    frame = evaluation.by_lead
    if frame is not None and "lead_minutes" in frame:
        minutes = frame.loc[frame["lead"] == lead, "lead_minutes"]
        if len(minutes):
            return f"lead {int(lead)} ({_number(minutes.iloc[0])} min)"
    return f"lead {int(lead)}"


def _group_label(evaluation: Evaluation, group: Any) -> str:
    if str(group) in SEASONS:
        return f"season {group}"
    if str(group).isdigit():
        return f"init month {group}"
    return f"event type {group}"


def _with_interval(evaluation: Evaluation, key: str) -> str:
    value = evaluation.scores.get(key)
    if not finite(value):
        return "–"
    interval = evaluation.interval(key)
    return _number(value) + (f" {format_interval(interval)}" if interval and None not in interval else "")


def _frame_with_intervals(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
            value = row[column]
            if finite(value) and finite(low) and finite(high):
                cells.append(f"{_number(value)} {format_interval([low, high])}")
            else:
                cells.append(value)
        rows.append(cells)
    return markdown_table(columns, rows)


def _interval(row: Any) -> list[float] | None:
    low, high = getattr(row, "ci_low", math.nan), getattr(row, "ci_high", math.nan)
    return [low, high] if finite(low) and finite(high) else None


def _number(value: Any) -> str:
    if not finite(value):
        return "–"
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"
