"""PreDiff stage 2: latent diffusion on the frozen VAE's latents (model.vae_ckpt = a prediff_vae checkpoint).

ε- (or v-) prediction MSE at random noise levels, optionally weighted per timestep by a learned log-variance
(`learn_logvar`, the published recipe); an exponential moving average of the denoiser
(earthcast.lightning.ema) is what validation, the test ensembles and `earthcast sample` use.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from earthcast.diffusion import KnowledgeControl, build_sampler
from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint
from earthcast.lightning.ema import frozen_copy, update_average
from earthcast.lightning.module import MODULES, ForecastTestStep
from earthcast.lightning.optim import build_optimizer
from earthcast.lightning.prediff.latent import LatentDiffusionModule, seeded, substate
from earthcast.metrics import build_evaluator


class TimestepLogVariance(nn.Module):
    """The learned loss weighting of latent-diffusion training (`learn_logvar`): one log-variance s_t per
    diffusion timestep, and the objective mean over the batch of mse_b · exp(−s_t_b) + s_t_b. At its optimum
    s_t is the log of the expected error at t, so every timestep contributes on the same scale."""

    def __init__(self, num_timesteps: int, init: float):
        super().__init__()
        self.logvar = nn.Parameter(torch.full((num_timesteps,), float(init)))

    def forward(self, mse: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.logvar[t]
        return (mse * torch.exp(-s) + s).mean()


@MODULES.register("prediff_ldm")
class PreDiffLDMModule(ForecastTestStep, LatentDiffusionModule):
    parent_key, parent_module, parent_keys = "vae_ckpt", "prediff_vae", ("vae", "latent_scale")
    frozen = ("vae", "denoiser_ema")

    @classmethod
    def adopt(cls, config: dict, parent: Checkpoint) -> dict[str, dict]:
        model, state = config["model"], parent.state_dict
        if model["unit_variance_latents"] and parent.converted_from:
            raise UserError(f"model.vae_ckpt={parent.path} holds released VAE weights without a measured latent "
                            f"scale; train with model.unit_variance_latents=false (published)")
        model["vae"] = parent.config["model"]["autoencoder"]
        # published: the latents as the VAE gives them; ours: scaled to unit variance by the VAE stage's measure
        model["latent_scale"] = float(state["latent_scale"]) if model["unit_variance_latents"] else 1.0
        return {"vae": substate(state, "autoencoder")}

    @staticmethod
    def latent_spec(model: dict) -> dict:
        return model

    def __init__(self, config: dict | DictConfig):
        super().__init__(config)
        model = self.config["model"]
        self.denoiser_ema = frozen_copy(self.denoiser)
        self.ema = model["ema"]
        weighting = model["learn_logvar"]
        self.loss_weight = (TimestepLogVariance(self.schedule.num_timesteps, float(weighting["init"]))
                            if weighting["enabled"] else None)
        self.freeze()
        self._ema_step = 0  # the optimizer step the average last followed
        self.test_evaluator = build_evaluator(self.config["evaluator"], bootstrap=self.config.get("bootstrap"))

    @property
    def sampling_denoiser(self) -> nn.Module:
        return self.denoiser_ema if self.ema["enabled"] else self.denoiser

    def _errors(self, batch: dict, denoiser: nn.Module, seed: int | None = None):
        """(per-sample MSE of the prediction, the sampled timesteps)."""
        generator = seeded(seed)
        context, z0 = self.training_latents(batch, generator)
        t, noise, z_t = self.noised(z0, generator)
        target = self.schedule.training_target(z0, noise, t, self.prediction_type)
        return (denoiser(z_t, t, context) - target).pow(2).flatten(1).mean(dim=1), t

    def _loss(self, batch: dict, denoiser: nn.Module, seed: int | None = None) -> torch.Tensor:
        """The plain denoising MSE (what validation reports, whatever the training weighting)."""
        return self._errors(batch, denoiser, seed)[0].mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        mse, t = self._errors(batch, self.denoiser)
        loss = mse.mean() if self.loss_weight is None else self.loss_weight(mse, t)
        size = batch["inputs"].shape[0]
        self.check_finite(loss, "diffusion loss")
        if self.loss_weight is not None:
            self.log_scalar("train/mse", mse.mean(), size)
            self.log_scalar("train/logvar_mean", self.loss_weight.logvar.detach().mean(), size)
        self.log_scalar("train/loss", loss, size, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if not self.ema["per_optimizer_step"]:  # published: one update per training batch
            updates = self.trainer.fit_loop.epoch_loop.total_batch_idx + 1 if self._trainer else batch_idx + 1
        elif self.global_step > self._ema_step:  # ours: once per optimizer step (accumulation included)
            self._ema_step = updates = self.global_step
        else:
            return
        update_average(self.denoiser_ema, self.denoiser, float(self.ema["decay"]), updates)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        size = batch["inputs"].shape[0]
        self.log_scalar("val/loss", self._loss(batch, self.sampling_denoiser, seed=batch_idx), size, prog_bar=True)
        if self.ema["enabled"]:
            self.log_scalar("val/loss_online", self._loss(batch, self.denoiser, seed=batch_idx), size)

    def forecast(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """An ensemble per sequence with model.sampling (members, sampler), reproducible per batch."""
        sampling = self.config["model"]["sampling"]
        sampler = build_sampler(sampling["sampler"], self.schedule, self.prediction_type)
        members, _, _ = KnowledgeControl().sample(self.pipeline(), batch["inputs"], int(sampling["members"]),
                                                  sampler, int(self.config["dataset"]["out_len"]),
                                                  seed=1000 + batch_idx)
        return members

    def configure_optimizers(self):
        # the learned log-variances train with the denoiser, in the same optimizer (as in the reference)
        trained = self.denoiser if self.loss_weight is None else nn.ModuleDict(
            {"denoiser": self.denoiser, "loss_weight": self.loss_weight})
        return build_optimizer(trained, self.config["optim"], self.trainer.estimated_stepping_batches)
