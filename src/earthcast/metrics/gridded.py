"""Scores of any gridded variable (`evaluator=gridded`), in the variable's own units, with masked points left
out.

Scores (keys in metrics.json):
  mse, rmse, mae           over the valid points of every frame (rmse = √mse of the pooled squared errors)
  mean_error               forecast − observation, averaged: the additive bias
  csi/pod/sucr/far/frequency_bias/hss_<thr>, csi_m    event = value ≥ thr, for each of `thresholds`
  crps, spread_skill_ratio, rank_hist_<r>             ensembles (a deterministic forecast's crps is its MAE)
  n_samples
A point is valid where the target and the forecast are finite and the batch's `mask` (dataset=gridded: NaN
and land points) is True. Deterministic scores of an ensemble are those of its member mean. With
`reference: true` and a context, persistence (last context frame repeated) is scored on the same points under
`persistence/<key>`. Groups: calendar month of the forecast's initialisation time (meta "init_time", ISO
strings), "unknown" without one. With a bootstrap (earthcast.metrics.bootstrap) the resampling unit is the
calendar day of the initialisation time (forecasts started the same day move together); every score gets an
interval over all samples, by lead and by group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from earthcast.errors import UserError
from earthcast.metrics import scores
from earthcast.metrics.base import EVALUATORS, ForecastEvaluator
from earthcast.metrics.bootstrap import weighted_sum
from earthcast.metrics.inputs import drop_channel, require_numbers, split_forecast, threshold_label

MODEL, PERSISTENCE = 0, 1
SOURCE_PREFIXES = {MODEL: "", PERSISTENCE: "persistence/"}
GROUP_LABELS: list[Any] = [*range(1, 13), "unknown"]
CATEGORICAL_NAMES = ("csi", "pod", "sucr", "far", "frequency_bias", "hss")


def valid_points(prediction: torch.Tensor, target: torch.Tensor, meta: dict | None) -> torch.Tensor:
    """B×T×H×W booleans: finite target and forecast, and the batch's mask where it has one."""
    valid = torch.isfinite(target) & torch.isfinite(prediction)
    mask = (meta or {}).get("mask")
    if mask is not None:
        mask = torch.as_tensor(mask, device=target.device)
        valid &= drop_channel(mask, "mask").bool()
    return valid


@EVALUATORS.register("gridded")
class GriddedEvaluator(ForecastEvaluator):
    """Accumulates masked scores of a gridded variable; see the module docstring for the keys."""

    SAMPLE_IDS = "init_time"
    RESAMPLING_UNIT = "days (calendar day of init_time)"

    def __init__(
        self,
        thresholds: Sequence[float] = (),
        frame_minutes: float | None = None,
        reference: bool = True,
        crps_estimator: str = "fair",
        max_leads: int = 64,
        max_members: int = 64,
        bootstrap: Any = None,
    ):
        self.thresholds = require_numbers("thresholds", thresholds, allow_empty=True)
        if frame_minutes is not None and not (isinstance(frame_minutes, (int, float)) and frame_minutes > 0):
            raise UserError(f"evaluator.frame_minutes must be a positive number or null, got {frame_minutes!r}")
        super().__init__(group_labels=GROUP_LABELS, max_leads=max_leads, max_members=max_members,
                         crps_estimator=crps_estimator, reference=reference, bootstrap=bootstrap)
        self.frame_minutes = frame_minutes
        n_groups = len(GROUP_LABELS)
        counts = torch.zeros(2, n_groups, max_leads, len(self.thresholds), 4, dtype=torch.int64)
        self.add_state("counts", counts, dist_reduce_fx="sum")
        # [Σ squared error, Σ |error|, Σ error, valid points]
        self.add_state("error_sums", torch.zeros(2, n_groups, max_leads, 4, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("sample_counts", torch.zeros(2, n_groups, dtype=torch.int64), dist_reduce_fx="sum")
        if self.bootstrap.active:
            n_thresholds = len(self.thresholds)
            self.add_replicate_state("replicate_counts_lead", (2, max_leads, n_thresholds, 4))
            self.add_replicate_state("replicate_counts_group", (2, n_groups, n_thresholds, 4))
            self.add_replicate_state("replicate_errors_lead", (2, max_leads, 4))
            self.add_replicate_state("replicate_errors_group", (2, n_groups, 4))

    def update(self, pred: torch.Tensor, target: torch.Tensor, context: torch.Tensor | None = None,
               meta: dict[str, Any] | None = None) -> None:
        """pred/target in physical units B×T×H×W[×1] (ensemble B×M×…), NaN where there is no value."""
        target = drop_channel(target, "target")
        deterministic, members = split_forecast(pred, target)
        n_samples, n_leads = target.shape[:2]
        self._claim_leads(n_leads)
        groups = self._groups(meta, n_samples).to(target.device)
        context = drop_channel(context, "context") if context is not None else None
        weights = self._begin_update(meta, target, context, groups)
        valid = valid_points(deterministic, target, meta)
        self._update_source(MODEL, deterministic, target, valid, groups, weights)
        self._update_probabilistic(deterministic, members, target, groups, scale=1.0, valid=valid, weights=weights)
        if self.reference and context is not None:
            persistence = context[:, -1:].expand_as(target)
            self._update_source(PERSISTENCE, persistence, target, valid & torch.isfinite(persistence), groups,
                                weights)

    def _update_source(self, source: int, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                       groups: torch.Tensor, weights: torch.Tensor | None) -> None:
        n_leads = target.shape[1]
        error = torch.where(valid, pred - target, 0.0).to(torch.float64)
        sums = torch.stack([scores.spatial_sum(error**2), scores.spatial_sum(error.abs()), scores.spatial_sum(error),
                            valid.sum(dim=(-2, -1)).to(torch.float64)], dim=-1)  # B×T×4
        device = self.error_sums.device
        groups = groups.to(device)
        self.error_sums[source, :, :n_leads].index_add_(0, groups, sums.to(device))
        if self.thresholds:
            outside = torch.tensor(-torch.inf, dtype=pred.dtype, device=pred.device)
            counts = scores.contingency_counts(torch.where(valid, pred, outside), torch.where(valid, target, outside),
                                               self.thresholds)
            counts[..., 3] -= (~valid).sum(dim=(-2, -1)).unsqueeze(-1)  # masked points are no correct negatives
            self.counts[source, :, :n_leads].index_add_(0, groups, counts.to(device))
        self.sample_counts[source].index_add_(0, groups, torch.ones_like(groups))
        if weights is not None:
            self.replicate_errors_lead[:, source, :n_leads] += weighted_sum(weights, sums).to(device)
            self._add_replicates_by_group(self.replicate_errors_group[:, source], weights, groups, sums.sum(dim=1))
            if self.thresholds:
                self.replicate_counts_lead[:, source, :n_leads] += weighted_sum(weights, counts).to(device)
                self._add_replicates_by_group(self.replicate_counts_group[:, source], weights, groups,
                                              counts.sum(dim=1))

    def _sample_ids(self, meta: dict[str, Any], n_samples: int) -> tuple[list[str] | None, list[str] | None]:
        times = meta.get("init_time")
        if times is None:
            return None, None
        times = [times] if isinstance(times, str) else list(times)
        if len(times) != n_samples:
            raise ValueError(f"meta['init_time'] has {len(times)} entries for {n_samples} samples")
        parsed = pd.to_datetime(times, errors="coerce")
        ids = [str(time) for time in times]
        return ids, [f"{day:%Y-%m-%d}" if day == day else f"undated {time}" for day, time in zip(parsed, ids)]

    def _groups(self, meta: dict[str, Any] | None, n_samples: int) -> torch.Tensor:
        times = (meta or {}).get("init_time")
        if times is None:
            return torch.full((n_samples,), GROUP_LABELS.index("unknown"), dtype=torch.int64)
        months = pd.to_datetime(list(times), errors="coerce").month
        return torch.tensor([int(m) - 1 if m == m else GROUP_LABELS.index("unknown") for m in months],
                            dtype=torch.int64)

    # ----------------------------------------------------------------------------------------- compute
    def _sources(self) -> list[int]:
        if self.reference and int(self.sample_counts[PERSISTENCE].sum()) > 0:
            return [MODEL, PERSISTENCE]
        return [MODEL]

    def _lead_columns(self, n_leads: int) -> dict[str, list]:
        leads = torch.arange(1, n_leads + 1)
        columns: dict[str, list] = {"lead": leads.tolist()}
        if self.frame_minutes is not None:
            columns["lead_minutes"] = (leads * self.frame_minutes).tolist()
        return columns

    def _source_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        samples = {"all": self.sample_counts[source].sum().unsqueeze(0),
                   "group": self.sample_counts[source, self._present()]}.get(by)
        counts = self._reduce(self.counts[source], by) if self.thresholds else None
        return self._score_columns(source, self._reduce(self.error_sums[source], by), counts, samples)

    def _replicate_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        n_leads, present = int(self.lead_count), self._present()
        if by == "all":
            errors = self.replicate_errors_lead[:, source, :n_leads].sum(dim=1, keepdim=True)
            counts = self.replicate_counts_lead[:, source, :n_leads].sum(dim=1, keepdim=True) if self.thresholds else None
        elif by == "lead":
            errors = self.replicate_errors_lead[:, source, :n_leads]
            counts = self.replicate_counts_lead[:, source, :n_leads] if self.thresholds else None
        else:
            errors = self.replicate_errors_group[:, source, present]
            counts = self.replicate_counts_group[:, source, present] if self.thresholds else None
        replicates, rows = errors.shape[:2]
        columns = self._score_columns(source, errors.reshape(-1, 4),
                                      None if counts is None else counts.reshape(-1, *counts.shape[2:]))
        return {key: value.reshape(replicates, rows).squeeze(1) if by == "all" else value.reshape(replicates, rows)
                for key, value in columns.items()}

    def _protocol_settings(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "frame_minutes": self.frame_minutes,
                "crps_estimator": self.crps_estimator}

    def _score_columns(self, source: int, errors: torch.Tensor, counts: torch.Tensor | None,
                       samples: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Columns for R rows from error sums R×4, counts R×K×4 (None without thresholds) and samples R."""
        prefix = SOURCE_PREFIXES[source]
        columns: dict[str, torch.Tensor] = {}
        if samples is not None:
            columns[f"{prefix}n_samples"] = samples
        mse = scores.safe_divide(errors[:, 0], errors[:, 3])
        columns[f"{prefix}mse"] = mse
        columns[f"{prefix}rmse"] = torch.sqrt(mse)
        columns[f"{prefix}mae"] = scores.safe_divide(errors[:, 1], errors[:, 3])
        columns[f"{prefix}mean_error"] = scores.safe_divide(errors[:, 2], errors[:, 3])
        if counts is not None:
            categorical = scores.categorical_scores(counts)
            columns[f"{prefix}csi_m"] = scores.nanmean(categorical["csi"])
            for name in CATEGORICAL_NAMES:
                for k, threshold in enumerate(self.thresholds):
                    columns[f"{prefix}{name}_{threshold_label(threshold)}"] = categorical[name][:, k]
        return columns
