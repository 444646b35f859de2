"""PreDiff stage 2: latent diffusion on the frozen VAE's latents (model.vae_ckpt = a prediff_vae checkpoint).

ε- (or v-) prediction MSE at random noise levels; an exponential moving average of the denoiser
(earthcast.lightning.ema) is what validation, the test ensembles and `earthcast sample` use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from earthcast.diffusion import KnowledgeControl, build_sampler
from earthcast.lightning.checkpoint import Checkpoint
from earthcast.lightning.ema import frozen_copy, update_average
from earthcast.lightning.module import MODULES, ForecastTestStep
from earthcast.lightning.optim import build_optimizer
from earthcast.lightning.prediff.latent import LatentDiffusionModule, substate
from earthcast.metrics import build_evaluator


@MODULES.register("prediff_ldm")
class PreDiffLDMModule(ForecastTestStep, LatentDiffusionModule):
    parent_key, parent_module, parent_keys = "vae_ckpt", "prediff_vae", ("vae", "latent_scale")
    frozen = ("vae", "denoiser_ema")

    @classmethod
    def adopt(cls, config: dict, parent: Checkpoint) -> dict[str, dict]:
        model, state = config["model"], parent.state_dict
        model["vae"] = parent.config["model"]["autoencoder"]
        model["latent_scale"] = float(state["latent_scale"])
        return {"vae": substate(state, "autoencoder")}

    @staticmethod
    def latent_spec(model: dict) -> dict:
        return model

    def __init__(self, config: dict | DictConfig):
        super().__init__(config)
        self.denoiser_ema = frozen_copy(self.denoiser)
        self.ema = self.config["model"]["ema"]
        self.freeze()
        self._ema_step = -1
        self.test_evaluator = build_evaluator(self.config["evaluator"])

    @property
    def sampling_denoiser(self) -> nn.Module:
        return self.denoiser_ema if self.ema["enabled"] else self.denoiser

    def _loss(self, batch: dict, denoiser: nn.Module, seed: int | None = None) -> torch.Tensor:
        context, z0 = self.encode(batch["inputs"]), self.encode(batch["targets"])
        t, noise, z_t = self.noised(z0, seed)
        target = self.schedule.training_target(z0, noise, t, self.prediction_type)
        return F.mse_loss(denoiser(z_t, t, context), target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.check_finite(self._loss(batch, self.denoiser), "diffusion loss")
        self.log_scalar("train/loss", loss, batch["inputs"].shape[0], prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.global_step != self._ema_step:  # once per optimizer step (accumulation included)
            self._ema_step = self.global_step
            update_average(self.denoiser_ema, self.denoiser, float(self.ema["decay"]), self.global_step)

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
        return build_optimizer(self.denoiser, self.config["optim"], self.trainer.estimated_stepping_batches)
