"""Constraints: statistics F(x, y) of a forecast x (given the context y) that knowledge control steers.

A constraint is registered by name in `CONSTRAINTS` and built from the `constraint:` config of the
alignment stage. It provides
    statistic(future)          B×T×H×W×C (dataset scale)  → B×K values F(x) (K = `num_outputs(out_len)`)
    context_features(context)  B×T×H×W×C                  → B×D regressors of F available before the forecast
                                                            (what the anticipation regression fits on)
    project(members, target, variance)                   → members adjusted so F equals `target` exactly
                                                            (the hard variant, ProbConserv-style); optional

`avg_intensity` ships (the future mean VIL, per frame or over all frames, as in PreDiff). Other knowledge
plugs in the same way: e.g. an N-body "energy" constraint computes kinetic + potential energy of the
positions in `statistic` and the initial energy in `context_features`, and may leave `project` undefined
(the CLI then reports that `knowledge.mode=project` is unavailable for it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from earthcast.errors import UserError
from earthcast.registry import Registry

CONSTRAINTS = Registry("constraint")


class Constraint:
    """Base class; see the module docstring for the interface."""

    name = "constraint"
    #: lower/upper bound of a valid field on the dataset scale (projection keeps members inside it)
    value_range: tuple[float, float] | None = None

    def num_outputs(self, out_len: int) -> int:
        raise NotImplementedError

    def statistic(self, future: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def context_features(self, context: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def statistic_range(self) -> tuple[float, float] | None:
        """Values F can take at all (None: unbounded); anticipated targets are clipped into it."""
        return None

    def project(self, members: torch.Tensor, target: torch.Tensor,
                variance: torch.Tensor | None = None) -> torch.Tensor:
        raise UserError(f"constraint {self.name!r} has no hard projection; use knowledge.mode=guide")

    def describe(self) -> dict:
        return {"name": self.name}


@CONSTRAINTS.register("avg_intensity")
class AverageIntensity(Constraint):
    """Mean of the future field: one value per future frame (`per_frame`) or one over all frames.

    Context features for anticipating it: the mean of each of the last `history` frames, the fraction of
    pixels above `wet_threshold` in the last frame, and the last-frame mean squared (a little curvature).
    """

    name = "avg_intensity"

    def __init__(self, per_frame: bool = False, history: int = 3, wet_threshold: float = 16 / 255,
                 value_range: tuple[float, float] | None = (0.0, 1.0)):
        self.per_frame = bool(per_frame)
        self.history = int(history)
        self.wet_threshold = float(wet_threshold)
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))
        if self.history < 1:
            raise UserError(f"constraint.history={history}; it must be ≥ 1")

    def num_outputs(self, out_len: int) -> int:
        return out_len if self.per_frame else 1

    def statistic_range(self) -> tuple[float, float] | None:
        return self.value_range  # a mean lies within the range of the field it averages

    def statistic(self, future: torch.Tensor) -> torch.Tensor:
        per_frame = future.flatten(2).mean(dim=2)  # B×T
        return per_frame if self.per_frame else per_frame.mean(dim=1, keepdim=True)

    def context_features(self, context: torch.Tensor) -> torch.Tensor:
        frame_means = context.flatten(2).mean(dim=2)  # B×T_in
        recent = frame_means[:, -self.history:]
        if recent.shape[1] < self.history:  # short contexts: repeat the first frame
            recent = torch.cat([recent[:, :1].expand(-1, self.history - recent.shape[1]), recent], dim=1)
        wet = (context[:, -1] >= self.wet_threshold).flatten(1).float().mean(dim=1, keepdim=True)
        return torch.cat([recent, wet, recent[:, -1:] ** 2], dim=1)

    def project(self, members: torch.Tensor, target: torch.Tensor,
                variance: torch.Tensor | None = None, iterations: int = 8) -> torch.Tensor:
        """The member closest to the original in the variance-weighted norm Σ (x' − x)²/v whose mean equals
        `target` (B×K, broadcast over members): x' = x + v·(b − mean x)·N/Σv per constrained block.

        Values are then clipped to `value_range`; the remaining gap is redistributed over the pixels that
        can still move, a few times, so the constraint holds to float precision unless it is infeasible.
        """
        batch, n_members = members.shape[:2]
        blocks = members.flatten(3) if self.per_frame else members.flatten(2).unsqueeze(2)  # B×M×K×N
        weights = torch.ones_like(blocks) if variance is None else (
            variance.flatten(3) if self.per_frame else variance.flatten(2).unsqueeze(2)).expand_as(blocks)
        weights = weights.clamp(min=1e-12)
        goal = target.reshape(batch, 1, -1, 1).to(blocks.dtype)
        x = blocks
        for _ in range(iterations):
            gap = goal - x.mean(dim=-1, keepdim=True)
            movable = weights
            if self.value_range is not None:  # pixels at the bound cannot move further that way
                low, high = self.value_range
                blocked = ((x <= low) & (gap < 0)) | ((x >= high) & (gap > 0))
                movable = weights * (~blocked)
            denominator = movable.sum(dim=-1, keepdim=True).clamp(min=1e-12)
            x = x + movable * gap * x.shape[-1] / denominator
            if self.value_range is not None:
                x = x.clamp(*self.value_range)
        return x.reshape(members.shape)

    def describe(self) -> dict:
        return {"name": self.name, "per_frame": self.per_frame, "history": self.history}


def build_constraint(cfg: Mapping | None) -> Constraint:
    """A constraint from {name: ..., **options}."""
    options = dict(cfg or {})
    name = options.pop("name", None)
    if not name:
        raise UserError(f"constraint config has no 'name'; set model.constraint.name to one of "
                        f"{', '.join(CONSTRAINTS.names())}")
    factory = CONSTRAINTS.get(str(name))
    try:
        return factory(**options)
    except TypeError as err:
        raise UserError(f"model.constraint: {err}; check the options of constraint {name!r}") from None
