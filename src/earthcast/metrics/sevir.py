"""SEVIR / SEVIR-LR VIL nowcasting evaluator.

Scores (keys in metrics.json; <thr> as written in the config, e.g. csi_16):
  csi/pod/sucr/far/frequency_bias/hss_<thr> from int64 hit/miss/false-alarm/correct-negative counts over all pixels,
                                    frames and samples (event = VIL ≥ thr; NaN → null when undefined)
  csi_m                             mean CSI over the thresholds whose CSI is defined (see below)
  csi_<thr>_pool<k>, csi_m_pool<k>  the same after k×k non-overlapping max pooling (ceil mode at the edges)
  fss_<thr>_<scale>                 fractions skill score, neighbourhood scale×scale pixels
  mse, mae                          on VIL/255, as in the published SEVIR tables (Gao et al. 2022, Table 4)
  crps, spread_skill_ratio, rank_hist_<r>  ensembles (a deterministic forecast's crps is its MAE)
  mean_intensity_error              |mean forecast VIL − target value| on /255, when meta gives the value
  n_samples
Groups (metrics_by_group.csv): the storm-event type of each sample's event, and the meteorological season
(DJF, MAM, JJA, SON) of its event time when the data give one; totals count each sample once.
With a bootstrap (earthcast.metrics.bootstrap) the resampling unit is the event (`event_id`): all sequences cut
from one event share its weights. Every score of the "all" row and csi_m, csi_<thr>, frequency_bias_<thr>, mse, mae,
crps by lead and by group get intervals.
Deterministic scores of an ensemble are those of its member mean. With `reference: true` and a context,
persistence (last context frame repeated) is scored on the same samples under `persistence/<key>`.

CSI-M over undefined thresholds: a threshold nobody forecast or observed has CSI 0/0; it is left out of the
mean rather than counted as 0 or 1. Over a full test set every threshold is defined, so CSI-M is the plain
mean of the published tables; in small groups or single leads without heavy rain it is the mean over the
thresholds that occurred (compare such rows with care — the highest thresholds usually score lowest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from earthcast.errors import UserError
from earthcast.metrics import scores
from earthcast.metrics.base import EVALUATORS, ForecastEvaluator
from earthcast.metrics.bootstrap import weighted_sum
from earthcast.metrics.inputs import (
    drop_channel,
    require_numbers,
    require_sizes,
    split_forecast,
    threshold_label,
)

#: event types of the SEVIR catalog's storm-event (id "S…") rows, from the NWS Storm Events database;
#: randomly sampled ("R…") events have none and go to UNLABELED, types not listed go to OTHER
SEVIR_EVENT_TYPES = (
    "Hail",
    "Thunderstorm Wind",
    "Tornado",
    "Funnel Cloud",
    "Flash Flood",
    "Heavy Rain",
    "Flood",
    "Lightning",
)
UNLABELED_GROUP = "unlabeled"
OTHER_GROUP = "other"
#: meteorological seasons, by calendar month of the event time (1 = January)
SEASONS = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA", 8: "JJA",
           9: "SON", 10: "SON", 11: "SON"}
SEASON_GROUPS = ("DJF", "MAM", "JJA", "SON")
#: categorical scores kept by lead and by group on every bootstrap replicate
REPLICATE_NAMES = ("csi", "frequency_bias")

MODEL, PERSISTENCE = 0, 1
SOURCE_PREFIXES = {MODEL: "", PERSISTENCE: "persistence/"}
CATEGORICAL_NAMES = ("csi", "pod", "sucr", "far", "frequency_bias", "hss")


@EVALUATORS.register("sevir")
class SevirEvaluator(ForecastEvaluator):
    """Accumulates SEVIR scores over batches; see the module docstring for the keys."""

    SAMPLE_IDS = "event_id@seq_start"
    RESAMPLING_UNIT = "events (event_id)"
    VALUE_RANGE = (0.0, 255.0, "VIL levels 0–255")

    def __init__(
        self,
        thresholds: Sequence[float] = (16, 74, 133, 160, 181, 219),
        pool_sizes: Sequence[int] = (4, 16),
        fss_thresholds: Sequence[float] = (74, 133, 181),
        fss_scales: Sequence[int] = (1, 9, 33),
        frame_minutes: float | None = None,
        reference: bool = True,
        crps_estimator: str = "fair",
        value_scale: float = 255.0,
        event_types: Sequence[str] = SEVIR_EVENT_TYPES,
        intensity_target_key: str = "target_mean_intensity",
        max_leads: int = 64,
        max_members: int = 64,
        bootstrap: Any = None,
    ):
        self.thresholds = require_numbers("thresholds", thresholds)
        self.pool_sizes = require_sizes("pool_sizes", pool_sizes, minimum=2)
        self.fss_thresholds = require_numbers("fss_thresholds", fss_thresholds, allow_empty=True)
        self.fss_scales = require_sizes("fss_scales", fss_scales, minimum=1)
        if self.fss_thresholds and not self.fss_scales:
            raise UserError("evaluator.fss_scales is empty but fss_thresholds is not; give both or neither")
        if isinstance(event_types, str) or any(not isinstance(name, str) for name in event_types):
            raise UserError(f"evaluator.event_types must be a list of strings, got {event_types!r}")
        if not (isinstance(value_scale, (int, float)) and value_scale > 0):
            raise UserError(f"evaluator.value_scale must be a positive number, got {value_scale!r}")
        if frame_minutes is not None and not (isinstance(frame_minutes, (int, float)) and frame_minutes > 0):
            raise UserError(f"evaluator.frame_minutes must be a positive number or null, got {frame_minutes!r}")
        self.groups = [*event_types, UNLABELED_GROUP, OTHER_GROUP]
        self._group_index = {name.strip().casefold(): i for i, name in enumerate(event_types)}
        n_event_groups = len(self.groups)
        self.groups += SEASON_GROUPS
        super().__init__(
            group_labels=self.groups,
            max_leads=max_leads,
            max_members=max_members,
            crps_estimator=crps_estimator,
            reference=reference,
            bootstrap=bootstrap,
            primary_groups=n_event_groups,
        )
        self.frame_minutes = frame_minutes
        self.value_scale = float(value_scale)
        self.intensity_target_key = intensity_target_key
        n_sources, n_groups, n_pools = 2, len(self.groups), 1 + len(self.pool_sizes)
        counts_shape = (n_sources, n_groups, max_leads, n_pools, len(self.thresholds), 4)
        self.add_state("counts", torch.zeros(counts_shape, dtype=torch.int64), dist_reduce_fx="sum")
        fss_shape = (n_sources, max_leads, len(self.fss_thresholds), len(self.fss_scales), 2)
        self.add_state("fss_sums", torch.zeros(fss_shape, dtype=torch.float64), dist_reduce_fx="sum")
        # [Σ squared error, Σ absolute error, pixels] on the value_scale-normalised field
        errors_shape = (n_sources, n_groups, max_leads, 3)
        self.add_state("error_sums", torch.zeros(errors_shape, dtype=torch.float64), dist_reduce_fx="sum")
        sample_shape = (n_sources, n_groups)
        self.add_state("sample_counts", torch.zeros(sample_shape, dtype=torch.int64), dist_reduce_fx="sum")
        # [Σ |mean intensity − target value|, forecasts scored]
        self.add_state("intensity_sums", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
        if self.bootstrap.active:
            n_thresholds = len(self.thresholds)
            self.add_replicate_state("replicate_counts_all", (n_sources, n_pools, n_thresholds, 4))
            self.add_replicate_state("replicate_counts_lead", (n_sources, max_leads, n_thresholds, 4))
            self.add_replicate_state("replicate_counts_group", (n_sources, n_groups, n_thresholds, 4))
            self.add_replicate_state("replicate_errors_lead", (n_sources, max_leads, 3))
            self.add_replicate_state("replicate_errors_group", (n_sources, n_groups, 3))

    # ------------------------------------------------------------------------------------------ update
    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        context: torch.Tensor | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """pred/target in VIL units: B×T×H×W[×1], or pred B×M×T×H×W[×1] for an ensemble."""
        target = drop_channel(target, "target")
        deterministic, members = split_forecast(pred, target)
        n_samples, n_leads = target.shape[:2]
        self._claim_leads(n_leads)
        if context is not None:
            context = drop_channel(context, "context")
            if context.shape[0] != n_samples or context.shape[-2:] != target.shape[-2:]:
                raise ValueError(f"context {tuple(context.shape)} does not match target {tuple(target.shape)}")
        groups = self._groups(meta, n_samples).to(target.device)
        weights = self._begin_update(meta, target, context, groups)
        self._update_source(MODEL, deterministic, target, groups, weights)
        self._update_probabilistic(deterministic, members, target, groups, scale=self.value_scale, weights=weights)
        self._update_intensity(members if members is not None else deterministic.unsqueeze(1), meta)
        if self.reference and context is not None:
            persistence = context[:, -1:].expand_as(target)
            self._update_source(PERSISTENCE, persistence, target, groups, weights)

    def _update_source(self, source: int, pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor,
                       weights: torch.Tensor | None) -> None:
        n_leads = target.shape[1]
        per_pool = [scores.contingency_counts(pred, target, self.thresholds)]
        for size in self.pool_sizes:
            pooled_pred, pooled_target = scores.max_pool_ceil(pred, size), scores.max_pool_ceil(target, size)
            per_pool.append(scores.contingency_counts(pooled_pred, pooled_target, self.thresholds))
        counts = torch.stack(per_pool, dim=2)  # B×T×P×K×4
        self._add_by_group(self.counts[source, :, :n_leads], groups, counts)
        error_sums = scores.error_sums(pred, target, self.value_scale)
        self._add_by_group(self.error_sums[source, :, :n_leads], groups, error_sums)
        if self.fss_thresholds:
            increment = scores.fss_sums(pred, target, self.fss_thresholds, self.fss_scales)
            self.fss_sums[source, :n_leads] += increment.to(self.fss_sums.device)
        self._add_by_group(self.sample_counts[source], groups, torch.ones(groups.shape[0], dtype=torch.int64))
        if weights is not None:
            device = self.replicate_counts_all.device
            self.replicate_counts_all[:, source] += weighted_sum(weights, counts.sum(dim=1)).to(device)
            self.replicate_counts_lead[:, source, :n_leads] += weighted_sum(weights, counts[:, :, 0]).to(device)
            self._add_replicates_by_group(self.replicate_counts_group[:, source], weights, groups,
                                          counts[:, :, 0].sum(dim=1))
            self.replicate_errors_lead[:, source, :n_leads] += weighted_sum(weights, error_sums).to(device)
            self._add_replicates_by_group(self.replicate_errors_group[:, source], weights, groups,
                                          error_sums.sum(dim=1))

    def _update_intensity(self, members: torch.Tensor, meta: dict[str, Any] | None) -> None:
        if not meta or meta.get(self.intensity_target_key) is None:
            return
        wanted = torch.as_tensor(meta[self.intensity_target_key], dtype=torch.float64).flatten()
        if wanted.numel() != members.shape[0]:
            raise ValueError(
                f"meta[{self.intensity_target_key!r}] has {wanted.numel()} values for {members.shape[0]} samples"
            )
        forecast_mean = members.mean(dim=(2, 3, 4), dtype=torch.float64)  # B×M
        error = (forecast_mean - wanted.to(forecast_mean.device).unsqueeze(1)).abs() / self.value_scale
        increment = torch.stack([error.sum(), error.new_tensor(float(error.numel()))])
        self.intensity_sums += increment.to(self.intensity_sums.device)

    def _sample_ids(self, meta: dict[str, Any], n_samples: int) -> tuple[list[str] | None, list[str] | None]:
        events = _per_sample(meta.get("event_id"), n_samples, "event_id")
        if events is None:
            return None, None
        starts = _per_sample(meta.get("seq_start"), n_samples, "seq_start") or [""] * n_samples
        events = [str(event) for event in events]
        return [f"{event}@{start}" for event, start in zip(events, starts)], events

    def _groups(self, meta: dict[str, Any] | None, n_samples: int) -> torch.Tensor:
        """n × 2 group indices: event type (always) and season (−1 when the event time is unknown)."""
        meta = meta or {}
        event_types = _per_sample(meta.get("event_type"), n_samples, "event_type")
        if event_types is None:
            event_types = [None] * n_samples
        times = _per_sample(meta.get("time_utc"), n_samples, "time_utc") or [None] * n_samples
        return torch.tensor([[self._group_of(name), self._season_of(time)] for name, time in zip(event_types, times)],
                            dtype=torch.int64)

    def _season_of(self, time: Any) -> int:
        if isinstance(time, bytes):
            time = time.decode()
        if time is None or str(time).strip() in ("", "nan", "None", "NaT"):
            return -1
        try:
            month = pd.Timestamp(str(time)).month
        except ValueError:
            return -1
        return self.groups.index(SEASONS[month])

    def _group_of(self, event_type: Any) -> int:
        if isinstance(event_type, bytes):
            event_type = event_type.decode()
        if event_type is None or (isinstance(event_type, float) and math.isnan(event_type)):
            return self.groups.index(UNLABELED_GROUP)
        name = str(event_type).strip().casefold()
        if name in ("", "nan", "none"):
            return self.groups.index(UNLABELED_GROUP)
        return self._group_index.get(name, self.groups.index(OTHER_GROUP))

    # ----------------------------------------------------------------------------------------- compute
    def _source_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        n_leads = int(self.lead_count)
        fss = {"all": self.fss_sums[source, :n_leads].sum(dim=0).unsqueeze(0),
               "lead": self.fss_sums[source, :n_leads]}.get(by)  # FSS is not kept per group
        samples = {"all": self.sample_counts[source, : self.primary_groups].sum().unsqueeze(0),
                   "group": self.sample_counts[source, self._present()]}.get(by)
        return self._score_columns(source, counts=self._reduce(self.counts[source], by),
                                   errors=self._reduce(self.error_sums[source], by), fss=fss, samples=samples)

    def _replicate_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        n_leads, n_thresholds = int(self.lead_count), len(self.thresholds)
        if by == "all":
            errors = self.replicate_errors_lead[:, source, :n_leads].sum(dim=1)
            return self._score_columns(source, counts=self.replicate_counts_all[:, source], errors=errors)
        if by == "lead":
            counts = self.replicate_counts_lead[:, source, :n_leads]
            errors = self.replicate_errors_lead[:, source, :n_leads]
        else:
            counts = self.replicate_counts_group[:, source, self._present()]
            errors = self.replicate_errors_group[:, source, self._present()]
        replicates, rows = counts.shape[:2]
        columns = self._score_columns(source, counts=counts.reshape(-1, 1, n_thresholds, 4),
                                      errors=errors.reshape(-1, 3), names=REPLICATE_NAMES)
        return {key: value.reshape(replicates, rows) for key, value in columns.items()}

    def _protocol_settings(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "pool_sizes": self.pool_sizes, "fss_thresholds": self.fss_thresholds,
                "fss_scales": self.fss_scales, "value_scale": self.value_scale, "frame_minutes": self.frame_minutes,
                "crps_estimator": self.crps_estimator}

    def _lead_columns(self, n_leads: int) -> dict[str, list]:
        leads = torch.arange(1, n_leads + 1)
        columns: dict[str, list] = {"lead": leads.tolist()}
        if self.frame_minutes is not None:
            columns["lead_minutes"] = (leads * self.frame_minutes).tolist()
        return columns

    def _extra_scores(self) -> dict[str, torch.Tensor]:
        if self.intensity_sums[1] > 0:
            return {"mean_intensity_error": scores.safe_divide(self.intensity_sums[0], self.intensity_sums[1])}
        return {}

    def _sources(self) -> list[int]:
        if self.reference and int(self.sample_counts[PERSISTENCE].sum()) > 0:
            return [MODEL, PERSISTENCE]
        return [MODEL]

    def _score_columns(
        self,
        source: int,
        counts: torch.Tensor,
        errors: torch.Tensor,
        fss: torch.Tensor | None = None,
        samples: torch.Tensor | None = None,
        names: tuple[str, ...] = CATEGORICAL_NAMES,
    ) -> dict[str, torch.Tensor]:
        """Score columns for R rows from counts R×P×K×4 (P ≤ 1 + pools: unpooled, then each pool size),
        errors R×3, fss R×K'×S×2, samples R; categorical scores `names` per threshold."""
        prefix = SOURCE_PREFIXES[source]
        labels = [threshold_label(threshold) for threshold in self.thresholds]
        columns: dict[str, torch.Tensor] = {}
        if samples is not None:
            columns[f"{prefix}n_samples"] = samples
        unpooled = scores.categorical_scores(counts[:, 0])
        columns[f"{prefix}csi_m"] = scores.nanmean(unpooled["csi"])
        for name in names:
            for k, label in enumerate(labels):
                columns[f"{prefix}{name}_{label}"] = unpooled[name][:, k]
        for p, size in enumerate(self.pool_sizes[: counts.shape[1] - 1], start=1):
            pooled_csi = scores.categorical_scores(counts[:, p])["csi"]
            columns[f"{prefix}csi_m_pool{size}"] = scores.nanmean(pooled_csi)
            for k, label in enumerate(labels):
                columns[f"{prefix}csi_{label}_pool{size}"] = pooled_csi[:, k]
        if fss is not None:
            fss_values = scores.fss_from_sums(fss)
            for k, threshold in enumerate(self.fss_thresholds):
                for s, scale in enumerate(self.fss_scales):
                    columns[f"{prefix}fss_{threshold_label(threshold)}_{scale}"] = fss_values[:, k, s]
        columns[f"{prefix}mse"] = scores.safe_divide(errors[:, 0], errors[:, 2])
        columns[f"{prefix}mae"] = scores.safe_divide(errors[:, 1], errors[:, 2])
        return columns



def _per_sample(values: Any, n_samples: int, key: str) -> list | None:
    """meta[key] as a list of n_samples values (a lone string for one sample; tensors to Python numbers)."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)):
        values = [values]
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    values = [value.decode() if isinstance(value, bytes) else value for value in values]
    if len(values) != n_samples:
        raise ValueError(f"meta[{key!r}] has {len(values)} entries for {n_samples} samples")
    return values
