"""The anticipated constraint value F₀ = τ + n·σ, from information available at forecast time.

PreDiff steers samples toward F₀. The reference code's F₀ was twice the *observed* future mean — an oracle.
Here τ is a ridge regression of the future statistic F(x) on features of the context y (the constraint's
`context_features`), fitted on the training split only, and σ is the regression's residual standard
deviation (per output): "n = 2" then means "two forecast-error standard deviations above the expected
value", the paper's reading of τ + nσ_τ. The fitted coefficients are buffers of this module, so they travel
inside the alignment checkpoint.

The module also keeps the training-split mean and standard deviation of F, which the alignment network's
regression target is standardised with.
"""

from __future__ import annotations

import torch
from torch import nn


class AnticipationRegression(nn.Module):
    """Streaming least squares: `update(features, targets)` over the training split, then `fit()`."""

    def __init__(self, num_features: int, num_outputs: int, ridge: float = 1e-6):
        super().__init__()
        design = num_features + 1  # + intercept
        self.ridge = float(ridge)
        self.register_buffer("gram", torch.zeros(design, design, dtype=torch.float64))
        self.register_buffer("cross", torch.zeros(design, num_outputs, dtype=torch.float64))
        self.register_buffer("target_sum", torch.zeros(num_outputs, dtype=torch.float64))
        self.register_buffer("target_sq_sum", torch.zeros(num_outputs, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(design, num_outputs, dtype=torch.float64))
        self.register_buffer("residual_std", torch.ones(num_outputs, dtype=torch.float64))
        self.register_buffer("target_mean", torch.zeros(num_outputs, dtype=torch.float64))
        self.register_buffer("target_std", torch.ones(num_outputs, dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def _design(features: torch.Tensor) -> torch.Tensor:
        features = features.to(torch.float64)
        return torch.cat([torch.ones_like(features[:, :1]), features], dim=1)

    @torch.no_grad()
    def reset(self) -> None:
        for name in ("gram", "cross", "target_sum", "target_sq_sum", "count"):
            getattr(self, name).zero_()
        self.fitted.fill_(False)

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        design, targets = self._design(features), targets.to(torch.float64)
        self.gram += design.T @ design
        self.cross += design.T @ targets
        self.target_sum += targets.sum(dim=0)
        self.target_sq_sum += (targets**2).sum(dim=0)
        self.count += targets.shape[0]

    @torch.no_grad()
    def fit(self) -> None:
        """Solve the ridge normal equations (intercept unpenalised) and the residual spread."""
        n = self.count.clamp(min=1)
        design = self.gram.shape[0]
        penalty = self.ridge * torch.diag(self.gram).mean() * torch.eye(design, dtype=torch.float64,
                                                                        device=self.gram.device)
        penalty[0, 0] = 0
        coef = torch.linalg.lstsq(self.gram + penalty, self.cross).solution
        # Σ residual² = yᵀy − 2βᵀXᵀy + βᵀXᵀXβ, per output
        sse = self.target_sq_sum - 2 * (coef * self.cross).sum(0) + (coef * (self.gram @ coef)).sum(0)
        dof = (n - design).clamp(min=1)
        mean = self.target_sum / n
        variance = (self.target_sq_sum / n - mean**2).clamp(min=0)
        floor = 1e-6 * (variance.sqrt() + 1e-12)  # a perfect fit must not give σ = 0 (n·σ is then meaningless)
        self.coef.copy_(coef)
        self.residual_std.copy_(torch.maximum((sse.clamp(min=0) / dof).sqrt(), floor).clamp(min=1e-12))
        self.target_mean.copy_(mean)
        self.target_std.copy_(variance.sqrt().clamp(min=1e-12))
        self.fitted.fill_(True)

    def expected(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(τ, σ): the anticipated value B×K and its residual standard deviation broadcast to B×K."""
        tau = self._design(features) @ self.coef
        return tau, self.residual_std.expand_as(tau)

    def anticipate(self, features: torch.Tensor, n_sigma: float) -> torch.Tensor:
        """F₀ = τ + n·σ for each sample (B×K), float64."""
        tau, sigma = self.expected(features)
        return tau + float(n_sigma) * sigma

    def standardize(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.target_mean.to(values)) / self.target_std.to(values)

    def unstandardize(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.target_std.to(values) + self.target_mean.to(values)
