"""Evaluators registered by name (`cfg.evaluator.name`), and what they have in common.

An evaluator is a `torchmetrics.Metric`: `update()` turns each batch into additive sufficient statistics
(integer contingency counts, float64 sums) held in fixed-size states reduced with "sum" (a few with "max"),
so Lightning/DDP merging and `Metric.merge_state` give exactly the result of one pass over all samples.
States are sized up front (`max_leads`, `max_members`, a fixed list of groups) because a state whose shape
depends on the data cannot be summed across ranks that saw different data.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
from torchmetrics import Metric

from earthcast.config import plain
from earthcast.errors import UserError
from earthcast.metrics import scores
from earthcast.metrics.bootstrap import (
    MIN_UNITS,
    UNIT_BITS,
    BootstrapSettings,
    ReplicateScores,
    count_units,
    grouped_weighted_sum,
    replicate_weights,
    unit_bit,
    weighted_sum,
)
from earthcast.metrics.inputs import json_ready, require_positive_int, score_frame
from earthcast.metrics.protocol import HASH_LANES, sample_hash_lanes, samples_digest
from earthcast.registry import Registry

EVALUATORS = Registry("evaluator")

CRPS_ESTIMATORS = ("fair", "plain")
#: score names earlier versions wrote (metrics.json, CSV tables) → today's: `bias` means the mean error in most
#: verification tools, so the categorical score is `frequency_bias`; `spread_skill` is a ratio
RENAMED_SCORES = {"spread_skill": "spread_skill_ratio", "bias_": "frequency_bias_"}


def current_score_name(key: str) -> str:
    """A score name as stored by any version (prefixes such as persistence/ kept) → today's name."""
    prefix, _, name = key.rpartition("/")
    for old, new in RENAMED_SCORES.items():
        if name == old or (old.endswith("_") and name.startswith(old)):
            name = new + name[len(old):]
            break
    return f"{prefix}/{name}" if prefix else name


def build_evaluator(cfg: Any, bootstrap: Any = None) -> ForecastEvaluator:
    """Build an evaluator from `cfg` (dict or DictConfig): `name` (or `_target_`, a class of the user's) picks
    the class, other keys are its options. `bootstrap` (the run config's `bootstrap:`, BootstrapSettings, or
    None for none) sets its intervals, for evaluators that take one."""
    options = plain(cfg)
    factory = EVALUATORS.build_from(options)
    name = options.pop("_target_", None) or options.get("name")
    options.pop("name", None)
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if bootstrap is not None and ("bootstrap" in accepted or takes_any):
        options["bootstrap"] = bootstrap if isinstance(bootstrap, BootstrapSettings) else plain(bootstrap)
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise UserError(
            f"evaluator.{unknown[0]} is not an option of evaluator {name!r}; "
            f"remove it or use one of: {', '.join(sorted(accepted))}"
        )
    return factory(**options)


class ForecastEvaluator(Metric):
    """Shared machinery: option checks, lead-slot bookkeeping, ensemble scores, DDP-synced tables.

    A subclass accumulates its states (indexed source × group × lead × …) and supplies the score columns of
    one source for rows made by `_reduce`: one row for all samples ("all"), one per lead ("lead") or one per
    group that had samples ("group"); `compute`, `compute_by_lead` and `compute_by_group` are built from them."""

    full_state_update = False
    higher_is_better = None
    #: how a subclass identifies samples and what its bootstrap resamples (recorded with the scores)
    SAMPLE_IDS = ""
    RESAMPLING_UNIT = ""
    #: (low, high, units) the physical values this evaluator's thresholds and scales are meant for; stored
    #: forecasts outside it are in other units (earthcast.metrics.stored); None: no expectation
    VALUE_RANGE: tuple[float, float, str] | None = None

    def __init__(
        self,
        *,
        group_labels: Sequence[Any],
        max_leads: int,
        max_members: int,
        crps_estimator: str,
        reference: bool,
        bootstrap: BootstrapSettings | dict | None = None,
        primary_groups: int | None = None,
    ):
        super().__init__()
        require_positive_int("max_leads", max_leads)
        require_positive_int("max_members", max_members)
        if crps_estimator not in CRPS_ESTIMATORS:
            raise UserError(f"evaluator.crps_estimator is {crps_estimator!r}; use 'fair' or 'plain'")
        self.max_leads = int(max_leads)
        self.max_members = int(max_members)
        self.crps_estimator = crps_estimator
        self.reference = bool(reference)
        self.group_labels = list(group_labels)
        n_groups = len(self.group_labels)
        self.n_groups = n_groups
        # the first `primary_groups` groups partition the samples (each sample is in exactly one of them); a
        # sample may also belong to one group after them (e.g. its season), so totals sum the primary ones only
        self.primary_groups = n_groups if primary_groups is None else int(primary_groups)
        self.bootstrap = (bootstrap if isinstance(bootstrap, BootstrapSettings)
                          else BootstrapSettings.from_config(bootstrap))
        replicates = self.bootstrap.replicates
        self.add_state("sample_hash", torch.zeros(HASH_LANES, dtype=torch.int64), dist_reduce_fx="sum")
        # [context frames, lead frames, height, width] of what was scored
        self.add_state("scored_shape", torch.zeros(4, dtype=torch.int64), dist_reduce_fx="max")
        # which resampling units each group saw (bit positions from their hash; "max" merges ranks like OR)
        self.add_state("unit_bitmap", torch.zeros(n_groups, UNIT_BITS, dtype=torch.uint8), dist_reduce_fx="max")
        self._positions_seen = 0  # samples without ids are known by their position in the stream
        self._ids_from_positions = False
        # how many lead slots were used (max over batches and ranks)
        self.add_state("lead_count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="max")
        # [crps sum, crps pixels, (M+1)/M-corrected ensemble variance sum, squared error of the mean]
        self.add_state(
            "probabilistic_sums", torch.zeros(n_groups, max_leads, 4, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("rank_counts", torch.zeros(max_members + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("member_count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="max")
        if replicates:
            self.add_replicate_state("replicate_probabilistic_lead", (max_leads, 4))
            self.add_replicate_state("replicate_probabilistic_group", (n_groups, 4))

    def add_replicate_state(self, name: str, shape: tuple[int, ...]) -> None:
        """A float64 state with one copy per bootstrap replicate (leading dim), summed across ranks."""
        zeros = torch.zeros(self.bootstrap.replicates, *shape, dtype=torch.float64)
        self.add_state(name, zeros, dist_reduce_fx="sum")

    def reset(self) -> None:
        super().reset()
        self._positions_seen = 0
        self._ids_from_positions = False

    # ----------------------------------------------------------------------------------------- updates
    def _begin_update(self, meta: dict[str, Any] | None, target: torch.Tensor, context: torch.Tensor | None,
                      groups: torch.Tensor) -> torch.Tensor | None:
        """Record the batch's sample ids (hash), resampling units (per group) and scored shape; return its
        B × n bootstrap weights (None without a bootstrap)."""
        n_samples = target.shape[0]
        ids, units = self._sample_ids(meta or {}, n_samples)
        if ids is None:
            ids = units = [f"#{self._positions_seen + i}" for i in range(n_samples)]
            self._ids_from_positions = True
        self._positions_seen += n_samples
        self.sample_hash += sample_hash_lanes(ids).to(self.sample_hash.device)
        bits = torch.tensor([unit_bit(str(unit)) for unit in units], dtype=torch.int64)
        memberships = groups.cpu().unsqueeze(1) if groups.ndim == 1 else groups.cpu()
        for column in memberships.unbind(dim=1):
            kept = column >= 0
            self.unit_bitmap[column[kept].to(self.unit_bitmap.device), bits[kept].to(self.unit_bitmap.device)] = 1
        shape = [context.shape[1] if context is not None else 0, *target.shape[1:4]]
        self.scored_shape = torch.maximum(self.scored_shape, torch.tensor(shape, device=self.scored_shape.device))
        if not self.bootstrap.active:
            return None
        return replicate_weights(units, self.bootstrap).to(target.device)

    def _sample_ids(self, meta: dict[str, Any], n_samples: int) -> tuple[list[str] | None, list[str] | None]:
        """(sample ids, resampling units) of a batch from its metadata; (None, None) when it has no ids."""
        raise NotImplementedError

    def _add_by_group(self, state: torch.Tensor, groups: torch.Tensor, increment: torch.Tensor) -> None:
        """state[g] += increment[i] for each sample i and each of its groups (groups: n, or n × memberships)."""
        groups = groups.to(state.device)
        increment = increment.to(state.device)
        for column in (groups.unsqueeze(1) if groups.ndim == 1 else groups).unbind(dim=1):
            kept = column >= 0
            state.index_add_(0, column[kept], increment[kept])

    def _add_replicates_by_group(self, state: torch.Tensor, weights: torch.Tensor, groups: torch.Tensor,
                                 increment: torch.Tensor) -> None:
        """The replicate version of `_add_by_group`: state B × G × …"""
        groups = groups.to(increment.device)
        for column in (groups.unsqueeze(1) if groups.ndim == 1 else groups).unbind(dim=1):
            kept = column >= 0
            state += grouped_weighted_sum(weights[:, kept.to(weights.device)], increment[kept], column[kept],
                                          state.shape[1]).to(state.device)

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
        valid: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> None:
        """CRPS (a deterministic forecast's CRPS is its MAE), spread, skill and ranks of fields in physical
        units; sums are divided by `scale` (`scale`² for squares) so the scores are on the normalised scale.
        `valid` (B×T×H×W booleans) leaves the other points out of every sum and count."""
        n_leads = target.shape[1]
        if valid is not None:
            target = torch.where(valid, target, 0.0)
            deterministic = torch.where(valid, deterministic, 0.0)
            members = None if members is None else torch.where(valid.unsqueeze(1), members, 0.0)
            pixels = valid.sum(dim=(-2, -1)).to(torch.float64)
        else:
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
            if valid is not None:  # ranks of the valid points alone: members (1, M, N), observations (1, N)
                members, target = members.movedim(1, -1)[valid].T.unsqueeze(0), target[valid].unsqueeze(0)
            ranks = scores.rank_histogram_counts(members, target)
            self.rank_counts[: n_members + 1] += ranks.to(self.rank_counts.device)
        increment[..., 1] = pixels
        self._add_by_group(self.probabilistic_sums[:, :n_leads], groups, increment)
        if weights is not None:
            self.replicate_probabilistic_lead[:, :n_leads] += weighted_sum(weights, increment).to(
                self.replicate_probabilistic_lead.device)
            self._add_replicates_by_group(self.replicate_probabilistic_group, weights, groups, increment.sum(dim=1))

    # ---------------------------------------------------------------------------------------- compute
    def compute(self) -> dict[str, float | None]:
        return self._scores()

    def compute_by_lead(self) -> pd.DataFrame:
        """One row per lead time (`lead`, 1-based), scores over all samples."""
        with self._synced():
            return self._by_lead()

    def compute_by_group(self) -> pd.DataFrame:
        """One row per group that had samples (`group`), scores over all leads."""
        with self._synced():
            return self._by_group()

    def results(self) -> dict[str, Any]:
        """Scores, per-lead and per-group tables, the bootstrap replicates' scores (None without a bootstrap)
        and what was scored (`protocol_facts`), from states synced once across ranks: under DDP every rank
        must ask for them (they are collective)."""
        with self._synced():
            return {"scores": self._scores(), "by_lead": self._by_lead(), "by_group": self._by_group(),
                    "replicates": self._replicate_scores() if self.bootstrap.active else None,
                    "protocol": self.protocol_facts()}

    def protocol_facts(self) -> dict[str, Any]:
        """What was scored and how (earthcast.metrics.protocol): sample count and id hash, scored shape and
        the evaluator's settings. Call on synced states (inside `results`) under DDP."""
        n_samples = int(self.sample_counts[0, : self.primary_groups].sum())
        context, leads, height, width = (int(value) for value in self.scored_shape.tolist())
        return {"n_samples": n_samples, "samples_sha256": samples_digest(self.sample_hash, n_samples),
                "sample_ids": self.sample_id_kind, "context_frames": context, "lead_frames": leads,
                "grid": [height, width], **self._protocol_settings()}

    def units_by_group(self) -> torch.Tensor:
        """Distinct resampling units seen per group (an estimate from the bitmap, exact for small counts)."""
        return count_units(self.unit_bitmap)

    def units_total(self) -> int:
        return int(count_units(self.unit_bitmap[: self.primary_groups].amax(dim=0)))

    @property
    def sample_id_kind(self) -> str:
        """How samples are identified (in the protocol): by their ids, or by position when the data had none."""
        return "position" if self._ids_from_positions else self.SAMPLE_IDS

    def _scores(self) -> dict[str, float | None]:
        columns = self._table("all")
        columns.update(self._rank_histogram())
        columns.update(self._extra_scores())
        return json_ready({key: value.flatten()[0] if value.ndim else value for key, value in columns.items()})

    def _by_lead(self) -> pd.DataFrame:
        return score_frame({**self._lead_columns(int(self.lead_count)), **self._table("lead")})

    def _by_group(self) -> pd.DataFrame:
        present = self._present()
        columns = {"group": [self.group_labels[i] for i in present]}
        for key, value in self._table("group").items():
            columns[key] = value
            if key == "n_samples" and not self._ids_from_positions:  # the resampling units behind them
                columns["n_units"] = self.units_by_group()[present]
        return score_frame(columns)

    def _replicate_scores(self) -> ReplicateScores | None:
        """Every score of `_replicate_columns` on every bootstrap replicate (see earthcast.metrics.bootstrap)."""
        if not self.update_called:
            return None
        tables: dict[str, dict[str, torch.Tensor]] = {"all": {}, "lead": {}, "group": {}}
        for source in self._sources():
            for by, columns in tables.items():
                columns.update(self._replicate_columns(source, by))
        n_leads, present = int(self.lead_count), self._present()
        per_lead = self.replicate_probabilistic_lead[:, :n_leads]
        tables["all"].update(self._probabilistic_scores(per_lead.sum(dim=1)))
        tables["lead"].update(self._probabilistic_scores(per_lead))
        tables["group"].update(self._probabilistic_scores(self.replicate_probabilistic_group[:, present]))
        # too few units for an interval: the whole run (every table) or single groups
        few = self.units_by_group()[present] < MIN_UNITS
        too_few_overall = self.units_total() < MIN_UNITS
        for by, columns in tables.items():
            for key, value in columns.items():
                if too_few_overall:
                    columns[key] = torch.full_like(value, float("nan"))
                elif by == "group":
                    columns[key] = value.masked_fill(few.to(value.device).unsqueeze(0), float("nan"))
        return ReplicateScores.build(self.bootstrap, self.RESAMPLING_UNIT, self.units_total(), tables["all"],
                                     tables["lead"],
                                     list(range(1, n_leads + 1)), tables["group"],
                                     [self.group_labels[i] for i in present])

    def _replicate_columns(self, source: int, by: str) -> dict[str, torch.Tensor]:
        """Scores of one source on every replicate: B ("all"), B × leads ("lead"), B × present groups."""
        raise NotImplementedError

    def _protocol_settings(self) -> dict[str, Any]:
        raise NotImplementedError

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
            return state[: self.primary_groups, :n_leads].sum(dim=(0, 1)).unsqueeze(0)
        if by == "lead":
            return state[: self.primary_groups, :n_leads].sum(dim=0)
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
            out["spread_skill_ratio"] = torch.sqrt(scores.safe_divide(sums[..., 2], sums[..., 3]))
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
