"""PreDiff inference: VAE + latent denoiser + a sampler (+ knowledge control) → ensemble forecasts.

The pipeline owns no weights of its own; it wires together modules owned by a Lightning module:
    encode   frames (dataset scale) → latents scaled to unit variance by the VAE stage's `latent_scale`
    forecast context (B, T_in, H, W, C) → members (B, M, T_out, H, W, C), drawing M chains per sample
Members of one sample are contiguous rows of the sampling batch (sample-major), so per-sample inputs
(context latents, knowledge targets) are repeated with `repeat_interleave(M)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from earthcast.diffusion.samplers import Guidance, Sampler


class PreDiffPipeline:
    def __init__(self, vae: nn.Module, denoiser: nn.Module, latent_scale: float,
                 output_range: tuple[float, float] | None = (0.0, 1.0), decode_chunk: int = 16):
        self.vae, self.denoiser = vae, denoiser
        self.latent_scale = float(latent_scale)
        self.output_range = output_range
        self.decode_chunk = max(1, int(decode_chunk))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means, scaled: the diffusion model's data space."""
        return self.vae.encode(x).mean * self.latent_scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        chunks = [self.vae.decode(part / self.latent_scale) for part in z.split(self.decode_chunk)]
        x = torch.cat(chunks)
        return x.clamp(*self.output_range) if self.output_range is not None else x

    def denoise_fn(self, context_latents: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda z_t, t: self.denoiser(z_t, t, context_latents)

    @torch.no_grad()
    def forecast(self, context: torch.Tensor, members: int, sampler: Sampler, out_len: int, *,
                 generator: torch.Generator | None = None,
                 guidance: Callable[[torch.Tensor], Guidance | None] | None = None,
                 on_step: Callable[[int, int], None] | None = None,
                 context_latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ensemble forecast (B, M, T_out, H, W, C) on the dataset scale, and the final latents.

        `guidance(context_latents_repeated)` builds the per-batch guidance callable (or None)."""
        if context_latents is None:
            context_latents = self.encode(context)
        repeated = context_latents.repeat_interleave(members, dim=0)
        batch = context.shape[0]
        shape = (batch * members, out_len, *context_latents.shape[2:])
        x_T = torch.randn(shape, generator=generator, device=context.device, dtype=context_latents.dtype)
        guide = guidance(repeated) if guidance is not None else None
        latents = sampler.sample(self.denoise_fn(repeated), x_T, generator=generator, guidance=guide,
                                 on_step=on_step)
        frames = self.decode(latents)
        return frames.unflatten(0, (batch, members)), latents.unflatten(0, (batch, members))
