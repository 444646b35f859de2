"""Evaluators registered by name (`cfg.evaluator.name`), and what they have in common.

An evaluator is a `torchmetrics.Metric`: `update()` turns each batch into additive sufficient statistics
(integer contingency counts, float64 sums) held in fixed-size states reduced with "sum" (a few with "max"),
so Lightning/DDP merging and `Metric.merge_state` give exactly the result of one pass over all samples.
States are sized up front (`max_leads`, `max_members`, a fixed list of groups) because a state whose shape
depends on the data cannot be summed across ranks that saw different data.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
from torchmetrics import Metric

from earthcast.config import plain
from earthcast.errors import UserError
from earthcast.metrics import scores
from earthcast.registry import Registry

EVALUATORS = Registry("evaluator")

CRPS_ESTIMATORS = ("fair", "plain")


def build_evaluator(cfg: Any) -> ForecastEvaluator:
    """Build an evaluator from `cfg` (dict or DictConfig): `name` picks the class, other keys are its options."""
    options = plain(cfg)
    name = options.pop("name", None)
    if not name:
        known = ", ".join(EVALUATORS.names())
        raise UserError(f"evaluator config has no 'name'; set evaluator.name to one of: {known}")
    factory = EVALUATORS.get(str(name))
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"evaluator.{unknown[0]} is not an option of evaluator {name!r}; "
            f"remove it or use one of: {', '.join(sorted(accepted))}"
        )
    return factory(**options)


def json_ready(values: Mapping[str, Any]) -> dict[str, float | int | None]:
    """Tensors/numpy scalars → float; NaN and ±inf → None (JSON null), so metrics.json stays valid JSON."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and not value.is_floating_point():
            out[key] = int(value)  # sample counts stay integers
            continue
        number = float(value.item() if hasattr(value, "item") else value)
        out[key] = number if math.isfinite(number) else None
    return out


def score_frame(table: Mapping[str, Any]) -> pd.DataFrame:
    """Columns of tensors/lists → DataFrame of plain floats (NaN kept), sample counts as integers."""
    plain = {
        key: value.detach().cpu().to(torch.float64).numpy() if isinstance(value, torch.Tensor) else value
        for key, value in table.items()
    }
    frame = pd.DataFrame(plain)
    for key in frame.columns:
        if key == "n_samples" or key.endswith("/n_samples"):
            frame[key] = frame[key].astype("int64")
    return frame


def threshold_label(threshold: float) -> str:
    """16 → '16', 0.5 → '0.5': the suffix used in keys such as csi_16."""
    return str(int(threshold)) if float(threshold).is_integer() else f"{threshold:g}"


def drop_channel(tensor: torch.Tensor, name: str, spatial_ndim: int = 4) -> torch.Tensor:
    """B×T×H×W×1 → B×T×H×W (channels-last C=1 squeezed)."""
    if tensor.ndim == spatial_ndim + 1:
        if tensor.shape[-1] != 1:
            raise ValueError(f"{name} has {tensor.shape[-1]} channels; evaluators score one variable (C=1)")
        tensor = tensor[..., 0]
    if tensor.ndim != spatial_ndim:
        raise ValueError(f"{name} must be B×T×H×W[×1], got shape {tuple(tensor.shape)}")
    return tensor


def split_forecast(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (deterministic forecast B×T×H×W, members B×M×T×H×W or None) for a target B×T×H×W.

    An ensemble has one more dim than the target: B×M×T×H×W[×1]. A one-member ensemble is scored as a
    deterministic forecast (fair CRPS and spread need at least two members).
    """
    members = None
    if pred.ndim == 6:
        members = drop_channel(pred, "ensemble prediction", spatial_ndim=5)
    elif pred.ndim == 5 and tuple(pred.shape[2:]) == tuple(target.shape[1:]):
        members = pred
    else:
        pred = drop_channel(pred, "prediction")
    if members is not None:
        if members.shape[0] != target.shape[0] or members.shape[2:] != target.shape[1:]:
            raise ValueError(
                f"ensemble prediction {tuple(members.shape)} does not match target {tuple(target.shape)}"
            )
        if members.shape[1] == 1:
            return members[:, 0], None
        return members.mean(dim=1), members
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} does not match target {tuple(target.shape)}")
    return pred, None


class ForecastEvaluator(Metric):
    """Shared machinery: option checks, lead-slot bookkeeping, ensemble scores, DDP-synced tables.

    A subclass accumulates its states (indexed source × group × lead × …) and supplies the score columns of
    one source for rows made by `_reduce`: one row for all samples ("all"), one per lead ("lead") or one per
    group that had samples ("group"); `compute`, `compute_by_lead` and `compute_by_group` are built from them."""

    full_state_update = False
    higher_is_better = None

    def __init__(
        self,
        *,
        group_labels: Sequence[Any],
        max_leads: int,
        max_members: int,
        crps_estimator: str,
        reference: bool,
    ):
        super().__init__()
        _require_positive_int("max_leads", max_leads)
        _require_positive_int("max_members", max_members)
        if crps_estimator not in CRPS_ESTIMATORS:
            raise UserError(f"evaluator.crps_estimator is {crps_estimator!r}; use 'fair' or 'plain'")
        self.max_leads = int(max_leads)
        self.max_members = int(max_members)
        self.crps_estimator = crps_estimator
        self.reference = bool(reference)
        self.group_labels = list(group_labels)
        n_groups = len(self.group_labels)
        self.n_groups = n_groups
        # how many lead slots were used (max over batches and ranks)
        self.add_state("lead_count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="max")
        # [crps sum, crps pixels, (M+1)/M-corrected ensemble variance sum, squared error of the mean]
        self.add_state(
            "probabilistic_sums", torch.zeros(n_groups, max_leads, 4, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("rank_counts", torch.zeros(max_members + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("member_count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="max")

    # ----------------------------------------------------------------------------------------- updates
    def _claim_leads(self, n_leads: int) -> None:
        if n_leads > self.max_leads:
            raise UserError(
                f"forecast has {n_leads} lead times but evaluator.max_leads is {self.max_leads}; raise it"
            )
        self.lead_count = torch.clamp(self.lead_count, min=n_leads)

    def _update_probabilistic(
        self,
        deterministic: torch.Tensor,
        members: torch.Tensor | None,
        target: torch.Tensor,
        groups: torch.Tensor,
        scale: float,
    ) -> None:
        """CRPS (a deterministic forecast's CRPS is its MAE), spread, skill and ranks of fields in physical
        units; sums are divided by `scale` (`scale`² for squares) so the scores are on the normalised scale."""
        n_leads = target.shape[1]
        pixels = target.shape[-2] * target.shape[-1]
        increment = torch.zeros(target.shape[0], n_leads, 4, dtype=torch.float64, device=target.device)
        if members is None:
            increment[..., 0] = scores.spatial_sum((deterministic - target).abs()) / scale
        else:
            n_members = members.shape[1]
            if n_members > self.max_members:
                raise UserError(
                    f"ensemble has {n_members} members but evaluator.max_members is {self.max_members}; raise it"
                )
            seen = int(self.member_count)
            if seen not in (0, n_members):
                raise ValueError(f"ensemble size changed from {seen} to {n_members} members between batches")
            self.member_count = torch.clamp(self.member_count, min=n_members)
            increment[..., 0] = scores.crps_sums(members, target, fair=self.crps_estimator == "fair") / scale
            increment[..., 2] = scores.corrected_variance_sums(members) / scale**2
            increment[..., 3] = scores.spatial_sum((deterministic - target) ** 2) / scale**2
            ranks = scores.rank_histogram_counts(members, target)
            self.rank_counts[: n_members + 1] += ranks.to(self.rank_counts.device)
        increment[..., 1] = pixels
        state = self.probabilistic_sums[:, :n_leads]
        state.index_add_(0, groups.to(state.device), increment.to(state.device))

    # ---------------------------------------------------------------------------------------- compute
    def compute(self) -> dict[str, float | None]:
        columns = self._table("all")
        columns.update(self._rank_histogram())
        columns.update(self._extra_scores())
        return json_ready({key: value.flatten()[0] if value.ndim else value for key, value in columns.items()})

    def compute_by_lead(self) -> pd.DataFrame:
        """One row per lead time (`lead`, 1-based), scores over all samples."""
        with self._synced():
            return score_frame({**self._lead_columns(int(self.lead_count)), **self._table("lead")})

    def compute_by_group(self) -> pd.DataFrame:
        """One row per group that had samples (`group`), scores over all leads."""
        with self._synced():
            return score_frame({"group": [self.group_labels[i] for i in self._present()], **self._table("group")})

    def results(self) -> dict[str, Any]:
        """Scores, per-lead and per-group tables. Each part syncs states across ranks, so under DDP every rank
        must ask for them (they are collective)."""
        return {"scores": self.compute(), "by_lead": self.compute_by_lead(), "by_group": self.compute_by_group()}

    def _table(self, by: str) -> dict[str, torch.Tensor]:
        columns: dict[str, torch.Tensor] = {}
        for source in self._sources():
            columns.update(self._source_columns(source, by))
        columns.update(self._probabilistic_scores(self._reduce(self.probabilistic_sums, by)))
        return columns

    def _reduce(self, state: torch.Tensor, by: str) -> torch.Tensor:
        """A group × lead × … state summed into rows: one ("all"), one per lead, or one per present group."""
        n_leads = int(self.lead_count)
        if by == "all":
            return state[:, :n_leads].sum(dim=(0, 1)).unsqueeze(0)
        if by == "lead":
            return state[:, :n_leads].sum(dim=0)
        return state[self._present(), :n_leads].sum(dim=1)

    def _present(self) -> list[int]:
        """Groups that had samples (of the model's forecasts, source 0)."""
        return (self.sample_counts[0] > 0).nonzero().flatten().tolist()

    def _lead_columns(self, n_leads: int) -> dict[str, list]:
        return {"lead": list(range(1, n_leads + 1))}

    def _extra_scores(self) -> dict[str, torch.Tensor]:
        return {}

    def _sources(self) -> list[int]:
        raise NotImplementedError

    def _source_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _probabilistic_scores(self, sums: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores from `probabilistic_sums` reduced to (..., 4)."""
        out = {"crps": scores.safe_divide(sums[..., 0], sums[..., 1])}
        if int(self.member_count) > 0:
            # Fortin et al. (2014, J. Hydrometeor. 15:1708): for a calibrated M-member ensemble
            # E[(mean - obs)^2] = (M+1)/M · E[unbiased member variance]; the factor is applied per pixel
            # in the variance sum, so a calibrated ensemble scores 1.
            out["spread_skill"] = torch.sqrt(scores.safe_divide(sums[..., 2], sums[..., 3]))
        return out

    def _rank_histogram(self) -> dict[str, torch.Tensor]:
        n_members = int(self.member_count)
        if n_members == 0:
            return {}
        counts = self.rank_counts[: n_members + 1]
        frequencies = scores.safe_divide(counts, counts.sum().expand_as(counts))
        return {f"rank_hist_{rank}": frequencies[rank] for rank in range(n_members + 1)}

    @contextmanager
    def _synced(self) -> Iterator[None]:
        """States summed over DDP ranks for the duration (like `compute`); call it on every rank."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync and not self._is_synced,
            should_unsync=self._should_unsync,
        ):
            yield


def _require_positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"evaluator.{key} must be a positive integer, got {value!r}")


def require_numbers(key: str, values: Any, *, allow_empty: bool = False) -> list[float]:
    """Validate a config list of numbers (thresholds, scales) and return it as floats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise UserError(f"evaluator.{key} must be a list of numbers, got {values!r}")
    numbers = list(values)
    if not numbers and not allow_empty:
        raise UserError(f"evaluator.{key} is empty; give at least one value")
    for value in numbers:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"evaluator.{key} must contain only numbers, got {value!r}")
    if len(set(numbers)) != len(numbers):
        raise UserError(f"evaluator.{key} has duplicates: {numbers}")
    return [float(value) for value in numbers]


def require_sizes(key: str, values: Any, *, minimum: int) -> list[int]:
    """Validate a config list of integer window sizes (pool sizes, FSS scales)."""
    numbers = require_numbers(key, values, allow_empty=True)
    sizes = [int(value) for value in numbers]
    if any(size != value or size < minimum for size, value in zip(sizes, numbers)):
        raise UserError(f"evaluator.{key} must be integers ≥ {minimum}, got {list(values)}")
    return sizes
