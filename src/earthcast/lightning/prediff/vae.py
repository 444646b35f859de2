"""PreDiff stage 1: a frame-wise KL autoencoder (+ an optional patch discriminator).

L1 reconstruction + kl_weight·KL (+ hinge-GAN from discriminator.start_step) on single frames. After every
validation epoch `latent_scale` is set so that scaled latents have unit variance; the next stage copies it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from earthcast.lightning.module import MODULES, EarthcastModule, ForecastTestStep
from earthcast.lightning.optim import build_optimizer
from earthcast.metrics import build_evaluator
from earthcast.models.prediff import build_autoencoder, build_discriminator


@MODULES.register("prediff_vae")
class PreDiffVAEModule(ForecastTestStep, EarthcastModule):
    def __init__(self, config: dict | DictConfig):
        super().__init__(config)
        model = self.config["model"]
        self.autoencoder = build_autoencoder(model["autoencoder"])
        self.discriminator = build_discriminator(model["discriminator"], self.autoencoder.in_channels)
        self.kl_weight = float(model["kl_weight"])
        self.frames_per_step = model["frames_per_step"]
        # latents × latent_scale have unit variance; measured on the validation split after every epoch
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("latent_moments", torch.zeros(3, dtype=torch.float64), persistent=False)
        self.test_evaluator = build_evaluator(self.config["evaluator"])

    @staticmethod
    def _all_frames(batch: dict) -> torch.Tensor:
        return torch.cat([batch["inputs"], batch["targets"]], dim=1)

    def _losses(self, x: torch.Tensor, sample: bool) -> tuple[dict, torch.Tensor]:
        recon, posterior = self.autoencoder(x, sample=sample)
        pixels = x[0, 0].numel()
        rec = (recon - x).abs().mean()
        # KL per frame spread over its pixels: the LDM ratio Σ|x − x̂| : w·ΣKL per frame, on a mean scale
        kl = posterior.kl().mean() / (x.shape[1] * pixels)
        return {"rec": rec, "kl": kl}, recon

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = self._all_frames(batch)
        frames = x.flatten(0, 1).unsqueeze(1)  # every frame its own one-frame sequence
        if self.frames_per_step and frames.shape[0] > int(self.frames_per_step):
            frames = frames[torch.randperm(frames.shape[0], device=x.device)[: int(self.frames_per_step)]]
        losses, recon = self._losses(frames, sample=True)
        loss = losses["rec"] + self.kl_weight * losses["kl"]
        critic = self.config["model"]["discriminator"]
        if self.discriminator is not None and self.global_step >= int(critic["start_step"]):
            # one optimizer for both players: the generator term sees the critic's weights detached, the
            # critic term sees the reconstruction detached, so each gradient reaches only its own player
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            fake_logits = torch.func.functional_call(self.discriminator, frozen, (recon,))
            losses["g"] = -fake_logits.mean()
            losses["d"] = (F.relu(1 - self.discriminator(frames)).mean()
                           + F.relu(1 + self.discriminator(recon.detach())).mean())
            loss = loss + float(critic["weight"]) * losses["g"] + losses["d"]
        self.check_finite(loss, "VAE loss")
        for name, value in losses.items():
            self.log_scalar(f"train/{name}", value, frames.shape[0])
        self.log_scalar("train/loss", loss, frames.shape[0], prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.latent_moments.zero_()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = self._all_frames(batch)
        losses, _ = self._losses(x, sample=False)
        self.log_scalar("val/loss", losses["rec"], x.shape[0], prog_bar=True)
        self.log_scalar("val/kl", losses["kl"], x.shape[0])
        z = self.autoencoder.encode(x).mean.to(torch.float64)
        self.latent_moments += torch.stack([z.sum(), (z**2).sum(), torch.tensor(z.numel(), device=z.device)])

    def on_validation_epoch_end(self) -> None:
        moments = self.latent_moments
        if self.trainer.world_size > 1:
            moments = self.trainer.strategy.reduce(moments.clone(), reduce_op="sum")
        if moments[2] > 1:
            mean = moments[0] / moments[2]
            std = float((moments[1] / moments[2] - mean**2).clamp(min=1e-12).sqrt())
            self.latent_scale.fill_(1.0 / std)
            self.log("val/latent_std", std, sync_dist=False)

    def forecast(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The reconstructed target frames: the ceiling of any forecast decoded by this VAE."""
        recon, _ = self.autoencoder(batch["targets"], sample=False)
        return recon.clamp(0, 1)

    def test_results(self) -> dict:
        results = super().test_results()
        results["scores"]["latent_scale"] = float(self.latent_scale)
        return results

    def configure_optimizers(self):
        players = nn.ModuleDict({"autoencoder": self.autoencoder})
        if self.discriminator is not None:
            players["discriminator"] = self.discriminator
        return build_optimizer(players, self.config["optim"], self.trainer.estimated_stepping_batches)
