"""ICAR-ENSO SST-anomaly forecasting evaluator.

Scores (keys in metrics.json):
  nino34_corr_lead<l>   Pearson correlation over test samples of the forecast and observed Niño 3.4 index at
                        index lead l (lead l = mean of forecast months l..l+2; 14 months → leads 1–12)
  nino34_corr_m         C-Nino3.4-M: mean correlation over leads 1..min(12, available) with a defined value
  nino34_corr_wm        C-Nino3.4-WM = (1/12) Σ_{l=1}^{12} a_l ln(l) corr_l, a_l = 1.5 (l ≤ 4), 2 (5–11), 3 (12);
                        null unless all 12 leads exist (see scores.nino34_weighted_correlation for the 1/12)
  nino34_rmse           mean over leads 1..min(12, available) of the per-lead index RMSE (°C); the Tianchi
                        score summed these instead, which is not in °C
  mse, mae              SST error over all grid cells and months on the normalised scale of the published
                        table: °C / sst_scale (sst_scale = SST max − min of the training data)
  crps, spread_skill_ratio, rank_hist_<r>  for ensembles, on the same normalised scale
  n_samples
With `reference: true`: `persistence/<key>` (last context month repeated; needs a context) and
`climatology/<key>` (zero anomaly, i.e. the climatological mean; its index correlation is undefined and not
reported, so climatology carries nino34_rmse, mse, mae).
Groups: calendar month of the forecast initialisation (meta "init_month", 1–12), "unknown" when absent.
With a bootstrap (earthcast.metrics.bootstrap) the resampling unit is a model-year: the windows of one CMIP
model's series whose starts fall in the same 12-month block share their weights (neighbouring windows overlap
by up to 25 of their 26 months, so resampling single windows would count one ENSO event many times over).
Every headline score, the correlation and RMSE by index lead, and nino34_corr_m, nino34_corr_wm,
nino34_rmse, mse, mae by initialisation month get intervals.
Correlations are accumulated as float64 moment sums (n, Σx, Σy, Σx², Σy², Σxy), so they merge across batches
and ranks without keeping per-sample indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from earthcast.errors import UserError
from earthcast.metrics import scores
from earthcast.metrics.base import EVALUATORS, ForecastEvaluator
from earthcast.metrics.bootstrap import weighted_sum
from earthcast.metrics.inputs import drop_channel, require_numbers, split_forecast
from earthcast.metrics.nino import (
    NINO34_LAT_RANGE,
    NINO34_LON_RANGE,
    NINO34_RUNNING_MEAN_MONTHS,
    nino34_box_weights,
    running_mean,
)

#: °C per unit of the normalised SST scale of the published ICAR-ENSO MSE: Earthformer's released loader
#: rescales SST as (x − min)/(max − min) with the training data's max 10.198975563049316 and
#: min −16.549121856689453, so errors shrink by 1/(max − min)
ICAR_ENSO_SST_RANGE = 26.74809741973877
#: leads entering C-Nino3.4-M/-WM and the headline RMSE
SCORED_LEADS = 12

MODEL, PERSISTENCE, CLIMATOLOGY = 0, 1, 2
SOURCE_PREFIXES = {MODEL: "", PERSISTENCE: "persistence/", CLIMATOLOGY: "climatology/"}
GROUP_LABELS: list[Any] = [*range(1, 13), "unknown"]
UNKNOWN_MONTH = 12  # group index


@EVALUATORS.register("enso")
class EnsoEvaluator(ForecastEvaluator):
    """Accumulates ICAR-ENSO scores over batches; see the module docstring for the keys."""

    SAMPLE_IDS = "model@seq_start"
    RESAMPLING_UNIT = "model-years (CMIP model, 12-month block of window starts)"
    # SST anomalies in °C: the largest in CMIP runs and observations stay well inside ±20 °C, while absolute SST
    # (°C or K) or radar levels fall outside
    VALUE_RANGE = (-20.0, 20.0, "SST anomalies in °C")

    def __init__(
        self,
        lat_range: Sequence[float] = NINO34_LAT_RANGE,
        lon_range: Sequence[float] = NINO34_LON_RANGE,
        cos_lat_weight: bool = False,
        running_mean_months: int = NINO34_RUNNING_MEAN_MONTHS,
        sst_scale: float = ICAR_ENSO_SST_RANGE,
        reference: bool = True,
        crps_estimator: str = "fair",
        max_leads: int = 64,
        max_members: int = 64,
        bootstrap: Any = None,
    ):
        self.lat_range = require_numbers("lat_range", lat_range)
        self.lon_range = require_numbers("lon_range", lon_range)
        if len(self.lat_range) != 2 or len(self.lon_range) != 2:
            raise UserError("evaluator.lat_range and evaluator.lon_range need exactly two values [start, end]")
        if isinstance(running_mean_months, bool) or not isinstance(running_mean_months, int) or running_mean_months < 1:
            raise UserError(f"evaluator.running_mean_months must be a positive integer, got {running_mean_months!r}")
        if not (isinstance(sst_scale, (int, float)) and sst_scale > 0):
            raise UserError(f"evaluator.sst_scale must be a positive number, got {sst_scale!r}")
        super().__init__(
            group_labels=GROUP_LABELS,
            max_leads=max_leads,
            max_members=max_members,
            crps_estimator=crps_estimator,
            reference=reference,
            bootstrap=bootstrap,
        )
        self.cos_lat_weight = bool(cos_lat_weight)
        self.running_mean_months = running_mean_months
        self.sst_scale = float(sst_scale)
        n_groups = len(GROUP_LABELS)
        # [Σ squared error, Σ absolute error, grid cells] on the normalised scale, per source/group/month
        errors = torch.zeros(3, n_groups, max_leads, 3, dtype=torch.float64)
        self.add_state("error_sums", errors, dist_reduce_fx="sum")
        # summed scores.moments of (forecast, observed) index per source (model, persistence)/group/index lead
        moments = torch.zeros(2, n_groups, max_leads, len(scores.MOMENT_FIELDS), dtype=torch.float64)
        self.add_state("nino_moments", moments, dist_reduce_fx="sum")
        self.add_state("sample_counts", torch.zeros(3, n_groups, dtype=torch.int64), dist_reduce_fx="sum")
        if self.bootstrap.active:
            self.group_index_leads = min(max_leads, SCORED_LEADS)
            self.add_replicate_state("replicate_errors_lead", (3, max_leads, 3))
            self.add_replicate_state("replicate_errors_group", (3, n_groups, 3))
            n_moments = len(scores.MOMENT_FIELDS)
            self.add_replicate_state("replicate_moments_lead", (2, max_leads, n_moments))
            self.add_replicate_state("replicate_moments_group", (2, n_groups, self.group_index_leads, n_moments))

    # ------------------------------------------------------------------------------------------ update
    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        context: torch.Tensor | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """pred/target in °C anomalies B×T×lat×lon[×1] (ensemble B×M×…); meta has lat, lon, init_month."""
        target = drop_channel(target, "target")
        deterministic, members = split_forecast(pred, target)
        n_samples, n_months = target.shape[:2]
        if n_months < self.running_mean_months:
            raise ValueError(f"{n_months} target months is shorter than the {self.running_mean_months}-month mean")
        self._claim_leads(n_months)
        if context is not None:
            context = drop_channel(context, "context")
            if context.shape[0] != n_samples or context.shape[-2:] != target.shape[-2:]:
                raise ValueError(f"context {tuple(context.shape)} does not match target {tuple(target.shape)}")
        groups = self._groups(meta, n_samples).to(target.device)
        resampled = self._begin_update(meta, target, context, groups)
        weights = self._box_weights(meta, target)
        observed_index = self._index(target, weights)
        self._update_source(MODEL, deterministic, target, observed_index, weights, groups, resampled)
        self._update_probabilistic(deterministic, members, target, groups, scale=self.sst_scale, weights=resampled)
        if not self.reference:
            return
        self._update_source(CLIMATOLOGY, torch.zeros_like(target), target, None, weights, groups, resampled)
        if context is not None:
            persistence = context[:, -1:].expand_as(target)
            self._update_source(PERSISTENCE, persistence, target, observed_index, weights, groups, resampled)

    def _update_source(
        self,
        source: int,
        pred: torch.Tensor,
        target: torch.Tensor,
        observed_index: torch.Tensor | None,
        weights: torch.Tensor,
        groups: torch.Tensor,
        resampled: torch.Tensor | None,
    ) -> None:
        """`weights`: the Niño 3.4 box weights; `resampled`: the bootstrap's B × n weights (or None)."""
        n_months = target.shape[1]
        error_sums = scores.error_sums(pred, target, self.sst_scale)
        self._add_by_group(self.error_sums[source, :, :n_months], groups, error_sums)
        self._add_by_group(self.sample_counts[source], groups, torch.ones(groups.shape[0], dtype=torch.int64))
        if resampled is not None:
            device = self.replicate_errors_lead.device
            self.replicate_errors_lead[:, source, :n_months] += weighted_sum(resampled, error_sums).to(device)
            self._add_replicates_by_group(self.replicate_errors_group[:, source], resampled, groups,
                                          error_sums.sum(dim=1))
        if observed_index is None:
            return
        forecast_index = self._index(pred, weights)
        n_index_leads = forecast_index.shape[1]
        increment = scores.moments(forecast_index, observed_index)
        self._add_by_group(self.nino_moments[source, :, :n_index_leads], groups, increment)
        if resampled is not None:
            self.replicate_moments_lead[:, source, :n_index_leads] += weighted_sum(resampled, increment).to(device)
            first_year = min(n_index_leads, self.group_index_leads)
            self._add_replicates_by_group(self.replicate_moments_group[:, source, :, :first_year], resampled,
                                          groups, increment[:, :first_year])

    def _index(self, field: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """B×T field → B×(T−window+1) Niño 3.4 index (float64)."""
        box_mean = torch.einsum("btyx,byx->bt", field.to(torch.float64), weights)
        return running_mean(box_mean, self.running_mean_months)

    def _box_weights(self, meta: dict[str, Any] | None, target: torch.Tensor) -> torch.Tensor:
        if not meta or meta.get("lat") is None or meta.get("lon") is None:
            raise ValueError("ENSO evaluation needs meta['lat'] and meta['lon'] (grid coordinates in degrees)")
        n_samples, _, n_lat, n_lon = target.shape
        lat, lon = _as_numpy(meta["lat"]), _as_numpy(meta["lon"])
        if lat.shape[-1] != n_lat or lon.shape[-1] != n_lon:
            raise ValueError(
                f"meta lat/lon have {lat.shape[-1]}/{lon.shape[-1]} values for a {n_lat}×{n_lon} grid"
            )
        weights = nino34_box_weights(lat, lon, self.lat_range, self.lon_range, self.cos_lat_weight)
        weights = torch.from_numpy(weights).to(target.device)
        return weights.expand(n_samples, n_lat, n_lon) if weights.ndim == 2 else weights

    def _sample_ids(self, meta: dict[str, Any], n_samples: int) -> tuple[list[str] | None, list[str] | None]:
        models, starts = meta.get("model"), meta.get("seq_start")
        if models is None or starts is None:
            return None, None
        models = [models] if isinstance(models, (str, bytes)) else list(models)
        models = [model.decode() if isinstance(model, bytes) else str(model) for model in models]
        starts = torch.as_tensor(_as_numpy(starts)).flatten().to(torch.int64).tolist()
        if len(models) != n_samples or len(starts) != n_samples:
            raise ValueError(f"meta['model'] / meta['seq_start'] have {len(models)} / {len(starts)} entries for "
                             f"{n_samples} samples")
        ids = [f"{model}@{start}" for model, start in zip(models, starts)]
        return ids, [f"{model}@year{start // 12}" for model, start in zip(models, starts)]

    def _groups(self, meta: dict[str, Any] | None, n_samples: int) -> torch.Tensor:
        months = (meta or {}).get("init_month")
        if months is None:
            return torch.full((n_samples,), UNKNOWN_MONTH, dtype=torch.int64)
        months = torch.as_tensor(_as_numpy(months)).flatten().to(torch.int64)
        if months.numel() != n_samples:
            raise ValueError(f"meta['init_month'] has {months.numel()} values for {n_samples} samples")
        if bool(((months < 1) | (months > 12)).any()):
            raise ValueError(f"meta['init_month'] must be calendar months 1–12, got {months.tolist()}")
        return months - 1

    # ----------------------------------------------------------------------------------------- compute
    def _source_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        """All samples and groups: the headline index scores (and, for all samples, the correlation at each
        index lead). Leads: the index correlation and RMSE at each lead, NaN beyond the last index lead."""
        n_months = int(self.lead_count)
        n_index_leads = max(n_months - self.running_mean_months + 1, 0)
        prefix = SOURCE_PREFIXES[source]
        moments = self._source_moments(source, self.nino_moments, source_dim=0)[:, :n_index_leads]
        if by == "lead":
            moments = moments.sum(dim=0)
            padding = moments.new_full((n_months - n_index_leads,), float("nan"))
            columns = {}
            if source != CLIMATOLOGY:
                columns[f"{prefix}nino34_corr"] = torch.cat([scores.pearson_from_moments(moments), padding])
            columns[f"{prefix}nino34_rmse"] = torch.cat([scores.rmse_from_moments(moments), padding])
            errors = self._reduce(self.error_sums[source], by)
            columns[f"{prefix}mse"] = scores.safe_divide(errors[:, 0], errors[:, 2])
            columns[f"{prefix}mae"] = scores.safe_divide(errors[:, 1], errors[:, 2])
            return columns
        if by == "all":
            moments, samples = moments.sum(dim=0, keepdim=True), self.sample_counts[source].sum().unsqueeze(0)
        else:
            present = self._present()
            moments, samples = moments[present], self.sample_counts[source, present]
        columns = self._score_columns(source, moments=moments, errors=self._reduce(self.error_sums[source], by),
                                      samples=samples)
        if by == "all" and source != CLIMATOLOGY:
            corr = scores.pearson_from_moments(moments[0])
            for lead in range(n_index_leads):
                columns[f"{prefix}nino34_corr_lead{lead + 1}"] = corr[lead]
        return columns

    def _sources(self) -> list[int]:
        if not self.reference:
            return [MODEL]
        return [source for source in (MODEL, PERSISTENCE, CLIMATOLOGY)
                if source == MODEL or int(self.sample_counts[source].sum()) > 0]

    def _replicate_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        n_months = int(self.lead_count)
        n_index_leads = max(n_months - self.running_mean_months + 1, 0)
        prefix = SOURCE_PREFIXES[source]
        errors_lead = self.replicate_errors_lead[:, source, :n_months]
        moments = self._source_moments(source, self.replicate_moments_lead, source_dim=1)[:, :n_index_leads]
        if by == "all":
            columns = self._score_columns(source, moments=moments, errors=errors_lead.sum(dim=1))
            if source != CLIMATOLOGY:
                corr = scores.pearson_from_moments(moments)
                columns.update({f"{prefix}nino34_corr_lead{lead + 1}": corr[:, lead] for lead in range(n_index_leads)})
            return columns
        if by == "lead":
            padding = moments.new_full((moments.shape[0], n_months - n_index_leads), float("nan"))
            columns = {f"{prefix}nino34_rmse": torch.cat([scores.rmse_from_moments(moments), padding], dim=1)}
            if source != CLIMATOLOGY:
                columns[f"{prefix}nino34_corr"] = torch.cat([scores.pearson_from_moments(moments), padding], dim=1)
            columns[f"{prefix}mse"] = scores.safe_divide(errors_lead[..., 0], errors_lead[..., 2])
            columns[f"{prefix}mae"] = scores.safe_divide(errors_lead[..., 1], errors_lead[..., 2])
            return columns
        present = self._present()
        moments = self._source_moments(source, self.replicate_moments_group, source_dim=1)[:, present]
        errors = self.replicate_errors_group[:, source, present]
        replicates, rows = errors.shape[:2]
        moments = moments[:, :, : min(n_index_leads, self.group_index_leads)]
        columns = self._score_columns(source, moments=moments.reshape(replicates * rows, *moments.shape[2:]),
                                      errors=errors.reshape(-1, 3))
        return {key: value.reshape(replicates, rows) for key, value in columns.items()}

    def _protocol_settings(self) -> dict[str, Any]:
        return {"lat_range": self.lat_range, "lon_range": self.lon_range, "cos_lat_weight": self.cos_lat_weight,
                "running_mean_months": self.running_mean_months, "sst_scale": self.sst_scale,
                "crps_estimator": self.crps_estimator}

    def _source_moments(self, source: int, state: torch.Tensor, source_dim: int) -> torch.Tensor:
        """A moments state (source along `source_dim`) for one source; climatology's are the observed ones
        with a zero forecast."""
        if source != CLIMATOLOGY:
            return state.select(source_dim, source)
        observed = state.select(source_dim, MODEL)
        zero_forecast = torch.zeros_like(observed)
        n, sum_y, sum_yy = (scores.MOMENT_FIELDS.index(name) for name in ("n", "sum_y", "sum_yy"))
        zero_forecast[..., n] = observed[..., n]
        zero_forecast[..., sum_y] = observed[..., sum_y]
        zero_forecast[..., sum_yy] = observed[..., sum_yy]
        zero_forecast[..., scores.MOMENT_FIELDS.index("sum_squared_error")] = observed[..., sum_yy]
        return zero_forecast

    def _score_columns(
        self, source: int, moments: torch.Tensor, errors: torch.Tensor, samples: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Columns for R rows from index moments R×L×7, errors R×3 and sample counts R."""
        prefix = SOURCE_PREFIXES[source]
        first_year = moments[:, :SCORED_LEADS]
        columns = {} if samples is None else {f"{prefix}n_samples": samples}
        if source != CLIMATOLOGY:
            corr = scores.pearson_from_moments(first_year)
            columns[f"{prefix}nino34_corr_m"] = scores.nanmean(corr)
            columns[f"{prefix}nino34_corr_wm"] = scores.nino34_weighted_correlation(corr)
        columns[f"{prefix}nino34_rmse"] = scores.nanmean(scores.rmse_from_moments(first_year))
        columns[f"{prefix}mse"] = scores.safe_divide(errors[:, 0], errors[:, 2])
        columns[f"{prefix}mae"] = scores.safe_divide(errors[:, 1], errors[:, 2])
        return columns


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], torch.Tensor):
        return torch.stack([torch.as_tensor(value) for value in values]).detach().cpu().numpy()
    return np.asarray(values)
