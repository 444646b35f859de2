"""PreDiff stage 1: a frame-wise KL autoencoder (+ an optional patch discriminator).

The loss of latent-diffusion autoencoders (Rombach et al., 2022), as PreDiff's reference trains its VAE:
    autoencoder  L1(x, x̂) + kl_weight·KL(q(z|x) ‖ N(0, I))  [+ w·g]   with g = −mean D(x̂)
    critic       ½·(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))          (hinge)
from discriminator.start_step on, where the adaptive weight w = ‖∇nll‖ / (‖∇g‖ + 10⁻⁴) (clamped to [0, 10⁴]),
gradients taken at the decoder's last layer, times discriminator.weight, balances the two terms whatever
their scales. `loss_scale` sets the scale of L1 and KL: per_frame_sum (published: summed over each frame's
pixels and latent elements, averaged over frames) or per_pixel_mean (ours: the same ratio divided by the
pixels per frame). The two players share one Adam-type optimizer; each is clipped on its own, as two
optimizers would be, and before start_step the critic takes zero-gradient steps, as the reference's critic
optimizer does (its Adam moments then start from the same state).

After every validation epoch `latent_scale` is set so that scaled latents have unit variance; the next stage
copies it when it uses unit-variance latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from earthcast.errors import UserError
from earthcast.lightning.module import MODULES, EarthcastModule, ForecastTestStep
from earthcast.lightning.optim import build_optimizer
from earthcast.metrics import build_evaluator
from earthcast.models.prediff import build_autoencoder, build_discriminator

LOSS_SCALES = ("per_frame_sum", "per_pixel_mean")


def adaptive_weight(nll: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor,
                    factor: float) -> torch.Tensor:
    """factor · ‖∂nll/∂W‖ / (‖∂g/∂W‖ + 10⁻⁴) at the last layer W, clamped to [0, 10⁴]; no gradient flows through it."""
    nll_grad, = torch.autograd.grad(nll, last_layer, retain_graph=True)
    adversarial_grad, = torch.autograd.grad(adversarial, last_layer, retain_graph=True)
    ratio = nll_grad.norm() / (adversarial_grad.norm() + 1e-4)
    return ratio.clamp(0.0, 1e4).detach() * factor


def hinge_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


@MODULES.register("prediff_vae")
class PreDiffVAEModule(ForecastTestStep, EarthcastModule):
    def __init__(self, config: dict | DictConfig):
        super().__init__(config)
        model = self.config["model"]
        self.autoencoder = build_autoencoder(model["autoencoder"])
        self.discriminator = build_discriminator(model["discriminator"], self.autoencoder.in_channels)
        self.kl_weight = float(model["kl_weight"])
        if model["loss_scale"] not in LOSS_SCALES:
            raise UserError(f"model.loss_scale={model['loss_scale']!r}: use one of {', '.join(LOSS_SCALES)}")
        self.frames_per_step = model["frames_per_step"]
        # latents × latent_scale have unit variance; measured on the validation split after every epoch
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("latent_moments", torch.zeros(3, dtype=torch.float64), persistent=False)
        self.test_evaluator = build_evaluator(self.config["evaluator"], bootstrap=self.config.get("bootstrap"))

    @staticmethod
    def _all_frames(batch: dict) -> torch.Tensor:
        return torch.cat([batch["inputs"], batch["targets"]], dim=1)

    def _losses(self, x: torch.Tensor, sample: bool) -> tuple[dict, torch.Tensor]:
        recon, posterior = self.autoencoder(x, sample=sample)
        frames = x.shape[0] * x.shape[1]
        per = frames if self.config["model"]["loss_scale"] == "per_frame_sum" else frames * x[0, 0].numel()
        return {"rec": (recon - x).abs().sum() / per, "kl": posterior.kl().sum() / per}, recon

    def adversarial_active(self) -> bool:
        return self.discriminator is not None and self.global_step >= int(self.config["model"]["discriminator"]
                                                                          ["start_step"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = self._all_frames(batch)
        frames = x.flatten(0, 1).unsqueeze(1)  # every frame its own one-frame sequence
        if self.frames_per_step and frames.shape[0] > int(self.frames_per_step):
            frames = frames[torch.randperm(frames.shape[0], device=x.device)[: int(self.frames_per_step)]]
        losses, recon = self._losses(frames, sample=True)
        loss = losses["rec"] + self.kl_weight * losses["kl"]
        if self.adversarial_active():
            # the generator term sees the critic's weights detached, the critic term the reconstruction
            # detached: one backward pass gives each player only its own gradient
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            losses["g"] = -torch.func.functional_call(self.discriminator, frozen, (recon,)).mean()
            losses["d_weight"] = adaptive_weight(losses["rec"], losses["g"], self.autoencoder.decoder.conv_out.weight,
                                                 float(self.config["model"]["discriminator"]["weight"]))
            losses["d"] = hinge_critic_loss(self.discriminator(frames), self.discriminator(recon.detach()))
            loss = loss + losses["d_weight"] * losses["g"] + losses["d"]
        self.check_finite(loss, "VAE loss")
        for name, value in losses.items():
            self.log_scalar(f"train/{name}", value, frames.shape[0])
        self.log_scalar("train/loss", loss, frames.shape[0], prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.discriminator is not None:  # before start_step: zero-gradient steps (the critic's Adam still counts)
            for param in self.discriminator.parameters():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm not in (None, "norm"):
            raise UserError(f"the VAE clips gradients by norm per player; gradient clipping by "
                            f"{gradient_clip_algorithm!r} is not supported")
        for player in (self.autoencoder, self.discriminator):
            if player is not None:
                torch.nn.utils.clip_grad_norm_([p for p in player.parameters() if p.grad is not None],
                                               float(gradient_clip_val))

    def on_validation_epoch_start(self) -> None:
        self.latent_moments.zero_()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = self._all_frames(batch)
        losses, recon = self._losses(x, sample=False)
        self.log_scalar("val/loss", F.l1_loss(recon, x), x.shape[0], prog_bar=True)
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
