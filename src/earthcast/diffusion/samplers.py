"""Reverse-process samplers: walk a `NoiseSchedule` backwards with any denoiser, any number of steps.

    sampler = build_sampler({"name": "ddim", "steps": 50, "eta": 0.0}, schedule, prediction_type="eps")
    x0 = sampler.sample(denoise, noise, generator=g, guidance=None, on_step=None)

`denoise(x_t, t)` returns the model output (ε, v or x_0, as `prediction_type` says) for a batch at timestep
t (a LongTensor of shape (B,)). Samplers hold no weights: the same object serves any model.

Timesteps are spaced "trailing" (Lin et al., 2024): the first step is always t = T−1, so a short chain
starts from pure noise like the training schedule does, and S = T visits every step.

Guidance. `guidance(x_t, t, variance)` returns a shift that is added to each transition mean — PreDiff's
knowledge control, μ ← μ − λ·Σ_t·∇E (earthcast.diffusion.knowledge). `variance` is the *ancestral* step
variance Σ_t (the DDPM posterior variance of the t → t_prev transition): for DDPM it is the step's own
variance; DDIM with η < 1 borrows it, since its own (zero for η = 0) would silently switch guidance off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from earthcast.diffusion.schedulers import NoiseSchedule, check_prediction_type
from earthcast.errors import UserError
from earthcast.registry import Registry

SAMPLERS = Registry("sampler")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Guidance = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


def trailing_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """`steps` decreasing timesteps from T−1 down to ≥ 0, evenly spaced; all of them when steps = T."""
    if not 1 <= steps <= num_timesteps:
        raise UserError(f"sampler.steps={steps}; it must be between 1 and the model's {num_timesteps} "
                        f"diffusion steps")
    stride = num_timesteps / steps
    return [int(round(num_timesteps - 1 - i * stride)) for i in range(steps)]


class Sampler:
    """Ancestral/DDIM sampling with the generalised transition of `NoiseSchedule.transition`.

    η = 1 is ancestral DDPM sampling (on the respaced chain when steps < T); η = 0 is deterministic DDIM.
    """

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, eta: float = 1.0,
                 prediction_type: str = "eps"):
        check_prediction_type(prediction_type)
        if eta < 0:
            raise UserError(f"sampler.eta={eta}; it must be ≥ 0 (0 = deterministic DDIM, 1 = DDPM-like)")
        self.schedule = schedule
        self.steps = schedule.num_timesteps if steps is None else int(steps)
        self.eta = float(eta)
        self.prediction_type = prediction_type
        self.timesteps = trailing_timesteps(schedule.num_timesteps, self.steps)

    def transitions(self) -> list[tuple[int, int]]:
        """(t, t_prev) pairs in sampling order; the last one lands on t_prev = −1, the clean sample."""
        return list(zip(self.timesteps, self.timesteps[1:] + [-1]))

    def step(self, denoise: Denoiser, x_t: torch.Tensor, t: int, t_prev: int, *,
             generator: torch.Generator | None = None, guidance: Guidance | None = None,
             noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One transition t → t_prev: returns (x_{t_prev}, x̂_0)."""
        t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        with torch.no_grad():
            output = denoise(x_t, t_batch)
        x0, eps = self.schedule.split_prediction(x_t, output, t, self.prediction_type)
        mean, variance = self.schedule.transition(x0, eps, t, t_prev, self.eta)
        if guidance is not None:
            ancestral = self.schedule.step_variance(t, t_prev, eta=1.0).to(x_t.dtype)
            mean = mean + guidance(x_t.detach(), t, ancestral.to(x_t.device))
        if t_prev < 0 or self.eta == 0:
            return mean, x0
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return mean + variance.sqrt() * noise, x0

    def sample(self, denoise: Denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
               guidance: Guidance | None = None,
               on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Run the whole chain from the noise x_T; `on_step(i, n)` reports progress after each step."""
        x = x_T
        pairs = self.transitions()
        for i, (t, t_prev) in enumerate(pairs):
            x, _ = self.step(denoise, x, t, t_prev, generator=generator, guidance=guidance)
            if on_step is not None:
                on_step(i + 1, len(pairs))
        return x

    def describe(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, eta={self.eta:g})"


@SAMPLERS.register("ddpm")
class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al., 2020): posterior variance β̃ at every step; all T steps by default."""

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, prediction_type: str = "eps"):
        super().__init__(schedule, steps=steps, eta=1.0, prediction_type=prediction_type)


@SAMPLERS.register("ddim")
class DDIMSampler(Sampler):
    """DDIM (Song et al., 2021): η = 0 is deterministic given x_T; η = 1 matches DDPM's transitions."""

    def __init__(self, schedule: NoiseSchedule, steps: int | None = 50, eta: float = 0.0,
                 prediction_type: str = "eps"):
        super().__init__(schedule, steps=steps, eta=eta, prediction_type=prediction_type)


def build_sampler(cfg: Mapping, schedule: NoiseSchedule, prediction_type: str) -> Sampler:
    """A sampler from {name: ddpm|ddim, steps: int|null, eta: float (ddim only)} (configs/sampler/)."""
    name = str(cfg["name"])
    factory = SAMPLERS.get(name)
    steps = None if cfg["steps"] is None else int(cfg["steps"])
    if name == "ddpm":
        if cfg.get("eta") not in (None, 1, 1.0):
            raise UserError("sampler.eta applies to ddim only (ddpm is η = 1); drop it or use sampler=ddim")
        return factory(schedule, steps=steps, prediction_type=prediction_type)
    return factory(schedule, steps=steps, eta=float(cfg["eta"]), prediction_type=prediction_type)
