"""Validate an ICAR-ENSO root (real or synthetic) and report what earthcast will read from it.

`check_enso_root(cfg_dataset)` never raises for a bad root: every problem becomes one line in
report["problems"] and report["ok"] is False. It checks files, variables, dims/shapes/dtypes, coordinates,
the year count implied by the model counts, record folding (shared months of consecutive records agree),
NaNs, which running-mean convention the labels follow, ENSO statistics of the labels, and the models and
samples of every split. Reading all SST of the real data takes a minute or so (≈1.2 GB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from rich.progress import Progress
from scipy.signal import welch

from earthcast.config import plain
from earthcast.data.base import CHECKERS
from earthcast.data.enso.archive import (
    LABEL_DIMS,
    SOURCE_FILES,
    SST_DIMS,
    count_windows,
    nino34_box_mean,
    source_of,
)
from earthcast.data.enso.reader import EnsoDataModule
from earthcast.errors import UserError


def index_statistics(series: list[np.ndarray], leads: tuple[int, ...] = (1, 3, 6, 9, 12)) -> dict:
    """ENSO diagnostics of monthly index series (each starting in January), pooled over the series.

    spectral_peak_years: period of the largest Welch power (40-year segments) among periods > 1.5 years;
    peak_months: calendar-month histogram (Jan…Dec) of event peaks — local maxima of |index| over ±6 months
    exceeding one standard deviation; winter_peak_fraction: share of those peaks in Nov, Dec or Jan;
    persistence: correlation of the index with itself `lead` months later (the persistence forecast's skill).
    """
    series = [np.asarray(s, dtype=np.float64) for s in series if len(s) >= 48]
    if not series:
        return {}
    segment = min(480, min(len(s) for s in series))
    power = np.mean([welch(s - s.mean(), fs=12.0, nperseg=segment)[1] for s in series], axis=0)
    freqs = welch(series[0] - series[0].mean(), fs=12.0, nperseg=segment)[0]  # cycles per year
    interannual = (freqs > 0) & (freqs < 1 / 1.5)
    peak_period = float(1.0 / freqs[interannual][np.argmax(power[interannual])])
    peaks = np.zeros(12, dtype=int)
    monthly_std = np.zeros(12)
    for s in series:
        anomaly = np.abs(s - s.mean())
        threshold = s.std()
        for month in range(6, len(s) - 6):
            window = anomaly[month - 6:month + 7]
            if anomaly[month] > threshold and anomaly[month] == window.max():
                peaks[month % 12] += 1
    pooled = np.concatenate([s - s.mean() for s in series])
    calendar = np.concatenate([np.arange(len(s)) % 12 for s in series])
    for month in range(12):
        monthly_std[month] = pooled[calendar == month].std()
    persistence = {}
    for lead in leads:
        now = np.concatenate([s[:-lead] for s in series])
        later = np.concatenate([s[lead:] for s in series])
        persistence[lead] = float(np.corrcoef(now, later)[0, 1])
    return {
        "spectral_peak_years": round(peak_period, 2),
        "peak_months": peaks.tolist(),
        "winter_peak_fraction": round(float(peaks[[10, 11, 0]].sum() / max(peaks.sum(), 1)), 3),
        "std_by_month": np.round(monthly_std, 3).tolist(),
        "std": round(float(pooled.std()), 3),
        "persistence": {lead: round(value, 3) for lead, value in persistence.items()},
    }


def _file_facts(path: Path) -> dict:
    facts: dict[str, Any] = {"present": path.is_file()}
    if not facts["present"]:
        return facts
    facts["size_bytes"] = path.stat().st_size
    with xr.open_dataset(path, engine="netcdf4", cache=False, decode_times=False) as ds:
        facts["variables"] = {name: {"dims": list(var.dims), "shape": list(var.shape), "dtype": str(var.dtype)}
                              for name, var in ds.data_vars.items()}
        for axis in ("lat", "lon"):
            if axis in ds.coords:
                values = ds[axis].values
                step = float(np.median(np.diff(values))) if values.size > 1 else None
                facts[axis] = {"first": float(values[0]), "last": float(values[-1]), "n": int(values.size),
                               "step": step}
    return facts


def compact_models(slots: list) -> str:
    """[CMIP6-1, …, CMIP6-15, CMIP5-16] → "CMIP6 1–15, CMIP5 16" for one-line reports."""
    parts: list[str] = []
    for group in dict.fromkeys(slot.group for slot in slots):
        if group == "soda":
            parts.append("SODA")
            continue
        numbers = sorted(slot.number for slot in slots if slot.group == group)
        runs, start = [], numbers[0]
        for previous, current in zip(numbers, numbers[1:] + [None]):
            run_ends = current is None or current != previous + 1
            if run_ends:
                runs.append(f"{start}" if start == previous else f"{start}–{previous}")
                start = current
        parts.append(f"{group.upper()} {', '.join(runs)}")
    return ", ".join(parts)


def _label_fits(sst_box: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """RMS difference between the labels and 3-month means of the SST box index, for three alignments."""
    n = len(labels)
    box = sst_box.astype(np.float64)
    three_month = (box[0:n - 2] + box[1:n - 1] + box[2:n]) / 3  # months i, i+1, i+2
    aligned = {"forward (m, m+1, m+2)": labels[0:n - 2], "centred (m-1, m, m+1)": labels[1:n - 1],
               "trailing (m-2, m-1, m)": labels[2:n]}
    return {name: float(np.sqrt(np.nanmean((three_month - label) ** 2))) for name, label in aligned.items()}


@CHECKERS.register("enso")
def check_enso_root(cfg_dataset: Any, progress: bool = True) -> dict:
    """Validate the root named by cfg_dataset; see the module docstring. Returns the report dict."""
    cfg = plain(cfg_dataset)
    root = Path(str(cfg["root"]))
    report: dict[str, Any] = {"dataset": str(cfg["name"]), "root": str(root), "ok": True,
                              "problems": [], "notes": [], "files": {}}

    def problem(message: str) -> None:
        report["ok"] = False
        if message not in report["problems"]:
            report["problems"].append(message)
            report["notes"].append(f"problem: {message}")  # the CLI prints notes

    if not root.is_dir():
        problem(f"dataset.root {root} does not exist; download ICAR-ENSO (data/README.md) "
                f"or use dataset=enso_synth")
        return report
    for source, (train_name, label_name) in SOURCE_FILES.items():
        for name, variable, dims in ((train_name, "sst", SST_DIMS), (label_name, "nino", LABEL_DIMS)):
            try:
                facts = _file_facts(root / name)
            except Exception as error:  # unreadable file: report, keep checking the rest
                facts = {"present": True, "error": f"{type(error).__name__}: {error}"}
                problem(f"{root / name} could not be read as netCDF; re-download it")
            report["files"][name] = facts
            if not facts["present"]:
                if source == "cmip":
                    problem(f"{root / name} not found; download ICAR-ENSO into dataset.root (see data/README.md)")
                continue
            var = facts.get("variables", {}).get(variable)
            if var is None and "error" not in facts:
                problem(f"{root / name} has no variable {variable!r}")
            elif var is not None:
                if tuple(var["dims"]) != dims:
                    problem(f"{root / name}: {variable} dims {tuple(var['dims'])}, expected {dims}")
                if not var["dtype"].startswith("float"):
                    problem(f"{root / name}: {variable} dtype {var['dtype']}, expected a float type")
    if not report["ok"]:
        return report

    try:
        datamodule = EnsoDataModule(cfg)
    except UserError as error:
        problem(str(error))
        return report
    archive = datamodule.archive
    report["grid"] = {"lat": report["files"]["CMIP_train.nc"].get("lat"),
                      "lon": report["files"]["CMIP_train.nc"].get("lon"),
                      "lon_kept": list(archive.lon_range), "height": archive.height, "width": archive.width}
    for axis in ("lat", "lon"):
        facts = report["grid"][axis] or {}
        if facts.get("step") != 5.0:
            problem(f"{root / 'CMIP_train.nc'}: {axis} spacing is {facts.get('step')}, expected the 5° ICAR-ENSO grid")
    groups = ["cmip6", "cmip5"] + (["soda"] if report["files"]["SODA_train.nc"]["present"] else [])
    slots = []
    for group in groups:
        try:
            archive.open_source(source_of(group))  # validates year count, label rows and grid
            slots += archive.slots(group)
        except UserError as error:
            problem(str(error))
    report["models"] = {group: sum(slot.group == group for slot in slots) for group in groups}
    if not report["ok"]:
        archive.close()
        return report

    folding = {"models_checked": 0, "max_overlap_diff_sst": 0.0, "max_overlap_diff_nino": 0.0}
    nan = {"sst": 0, "nino": 0}
    fits: dict[str, list[float]] = {}
    labels: dict[str, list[np.ndarray]] = {group: [] for group in groups}
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"checking {root}", total=len(slots))
            for slot in slots:
                try:
                    series = archive.read(slot)
                except UserError as error:
                    problem(str(error))
                    bar.advance(task)
                    continue
                folding["models_checked"] += 1
                folding["max_overlap_diff_sst"] = max(folding["max_overlap_diff_sst"], series.overlap_diff[0])
                folding["max_overlap_diff_nino"] = max(folding["max_overlap_diff_nino"], series.overlap_diff[1])
                nan["sst"] += series.sst_nan
                nan["nino"] += series.nino_nan
                box = nino34_box_mean(series.sst, series.lat, series.lon)
                for name, value in _label_fits(box, series.nino).items():
                    fits.setdefault(name, []).append(value)
                labels[slot.group].append(series.nino)
                bar.advance(task)
    finally:
        archive.close()
    report["folding"] = folding
    report["nan"] = nan
    if nan["sst"]:
        report["notes"].append(f"{nan['sst']} NaN SST values will be read as 0 °C anomaly")
    if fits:
        rms = {name: round(float(np.mean(values)), 4) for name, values in fits.items()}
        report["label_convention"] = {"rms_error": rms, "best": min(rms, key=rms.get)}
    report["nino_statistics"] = {group: index_statistics([s[np.isfinite(s)] for s in series])
                                 for group, series in labels.items() if series}
    window = datamodule.in_len + datamodule.out_len
    report["splits"] = {}
    for split, keys in datamodule.splits.items():
        chosen = [slot for slot in slots if (slot.group, slot.number) in set(keys)]
        if len(chosen) < len(keys):
            problem(f"dataset.splits.{split} names models the root does not have "
                    f"(e.g. soda without SODA_train.nc)")
        report["splits"][split] = {"models": compact_models(chosen), "model_names": [slot.name for slot in chosen],
                                   "samples": sum(count_windows(slot.length, window, datamodule.window_stride)
                                                  for slot in chosen)}
    return report
