"""PreDiff stage 3: knowledge alignment (model.ldm_ckpt = a prediff_ldm checkpoint).

The alignment network U_φ(z_t, t, context) learns, on noised latents of real futures, to estimate the
constraint statistic of the final forecast; the anticipation regression that gives F₀ from the context alone
is fitted on the training split first. The test scores both estimates in physical units.

Two choices of the regression target (model config, published vs ours):
  frame_targets          each future frame's estimate against that frame's statistic, the guidance taking
                         their mean (published; the released network reads out one value per frame), or one
                         loss on the statistic as the constraint defines it (ours)
  standardize_statistic  the statistic standardised by its training-split moments (ours), or as it is on
                         the dataset scale (published: the released network outputs mean VIL/255)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from earthcast.diffusion import AnticipationRegression, build_constraint
from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint
from earthcast.lightning.module import MODULES
from earthcast.lightning.optim import build_optimizer
from earthcast.lightning.prediff.latent import LatentDiffusionModule, frame_shape, seeded, substate
from earthcast.models.prediff import build_alignment_net


@MODULES.register("prediff_align")
class PreDiffAlignModule(LatentDiffusionModule):
    parent_key, parent_module, parent_keys = "ldm_ckpt", "prediff_ldm", ("ldm",)
    frozen = ("vae", "denoiser")

    @classmethod
    def adopt(cls, config: dict, parent: Checkpoint) -> dict[str, dict]:
        ldm_model, state = parent.config["model"], parent.state_dict
        if frame_shape(parent.config) != frame_shape(config):
            raise UserError(f"model.ldm_ckpt was trained on (in_len, out_len, height, width) = "
                            f"{frame_shape(parent.config)} but this run's dataset has {frame_shape(config)}; "
                            f"use the same dataset settings")
        config["model"]["ldm"] = {k: ldm_model[k] for k in ("vae", "latent_scale", "denoiser", "diffusion")}
        averaged = ldm_model["ema"]["enabled"]  # the weights the LDM itself samples with
        return {"vae": substate(state, "vae"), "denoiser": substate(state, "denoiser_ema" if averaged else "denoiser")}

    @staticmethod
    def latent_spec(model: dict) -> dict:
        return model["ldm"]

    def __init__(self, config: dict | DictConfig):
        super().__init__(config)
        self.freeze()
        model = self.config["model"]
        in_len, out_len, _, _ = frame_shape(self.config)
        self.constraint = build_constraint(model["constraint"])
        num_outputs = self.constraint.num_outputs(out_len)
        self.align_net = build_alignment_net(model["network"], self.latent_shape[2], in_len, out_len,
                                             self.latent_shape[:2], per_frame=num_outputs > 1)
        probe = torch.zeros(1, in_len, 4, 4, 1)
        num_features = self.constraint.context_features(probe).shape[1]
        self.anticipation = AnticipationRegression(num_features, num_outputs, float(model["anticipation"]["ridge"]))

    def _to_network(self, values: torch.Tensor) -> torch.Tensor:
        """The statistic (dataset scale) on the scale the network regresses."""
        if not self.config["model"]["standardize_statistic"]:
            return values
        return self.anticipation.standardize(values)

    def predict_statistic(self, z_t: torch.Tensor, t: torch.Tensor, context_latents: torch.Tensor) -> torch.Tensor:
        """U_φ in the statistic's own units (dataset scale); per frame averaged unless the constraint is per frame."""
        estimate = self.align_net(z_t, t, context_latents).to(torch.float64)
        if not self.config["model"]["standardize_statistic"]:
            return estimate
        return self.anticipation.unstandardize(estimate)

    # -- the anticipation regression: one pass over the training split before the first step
    def on_fit_start(self) -> None:
        if not bool(self.anticipation.fitted):
            self.fit_anticipation(self.trainer.datamodule)

    @torch.no_grad()
    def fit_anticipation(self, datamodule) -> None:
        """Fit the F₀ regression (and the statistic's moments) on the training split of `datamodule`."""
        datamodule.setup("fit")
        limit = self.config["model"]["anticipation"]["max_batches"]
        self.anticipation.reset()
        for i, batch in enumerate(datamodule.train_dataloader()):
            if limit is not None and i >= int(limit):
                break
            inputs, targets = batch["inputs"].to(self.device), batch["targets"].to(self.device)
            self.anticipation.update(self.constraint.context_features(inputs), self.constraint.statistic(targets))
        if self.anticipation.count < 2:
            raise UserError("the training split gave fewer than 2 sequences to fit the anticipation regression")
        self.anticipation.fit()

    def frame_statistics(self, future: torch.Tensor) -> torch.Tensor:
        """B×T_out: the constraint's statistic of each future frame on its own."""
        return torch.cat([self.constraint.statistic(future[:, i:i + 1]) for i in range(future.shape[1])], dim=1)

    def _loss(self, batch: dict, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        generator = seeded(seed)
        context, z0 = self.training_latents(batch, generator)
        t, _, z_t = self.noised(z0, generator)
        future = batch["targets"]
        if self.config["model"]["frame_targets"]:  # published: every frame's estimate against its frame
            estimate = self.align_net.frame_estimates(z_t, t, context)[..., 0]
            statistic = self.frame_statistics(future)
        else:
            estimate = self.align_net(z_t, t, context)
            statistic = self.constraint.statistic(future)
        target = self._to_network(statistic.to(torch.float64)).to(estimate.dtype)
        return F.mse_loss(estimate, target), (estimate - target).abs().detach()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.check_finite(self._loss(batch)[0], "alignment loss")
        self.log_scalar("train/loss", loss, batch["inputs"].shape[0], prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, _ = self._loss(batch, seed=batch_idx)
        self.log_scalar("val/loss", loss, batch["inputs"].shape[0], prog_bar=True)

    # -- test: how well U_φ and the anticipation regression estimate the statistic (physical units)
    def on_test_epoch_start(self) -> None:
        self._test_sums: dict[str, list[float]] = {}

    def _accumulate(self, name: str, errors: torch.Tensor) -> None:
        total = self._test_sums.setdefault(name, [0.0, 0.0])
        total[0] += float(errors.sum())
        total[1] += errors.numel()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        units = self.units  # errors of the statistic are differences: they scale, they do not shift
        truth = self.constraint.statistic(batch["targets"]).to(torch.float64)
        context = self.encode(batch["inputs"])
        z0 = self.encode(batch["targets"])
        generator = torch.Generator().manual_seed(batch_idx)
        T = self.schedule.num_timesteps
        for label, low, high in (("low_noise", 0, T // 3), ("mid_noise", T // 3, 2 * T // 3), ("high_noise", 2 * T // 3, T)):
            t = torch.randint(low, high, (z0.shape[0],), generator=generator).to(z0.device)
            noise = torch.randn(z0.shape, generator=generator).to(z0)
            estimate = self.predict_statistic(self.schedule.add_noise(z0, noise, t), t, context)
            self._accumulate(f"align_mae_{label}", units.difference((estimate - truth).abs()))
        tau, sigma = self.anticipation.expected(self.constraint.context_features(batch["inputs"]))
        self._accumulate("anticipation_mae", units.difference((tau - truth).abs()))
        self._accumulate("anticipation_within_1sigma", ((tau - truth).abs() <= sigma).to(torch.float64))
        last_frame = batch["inputs"][:, -1:].expand_as(batch["targets"])
        self._accumulate("persistence_mae", units.difference((self.constraint.statistic(last_frame) - truth).abs()))

    def test_results(self) -> dict:
        sums = self._test_sums
        if self.trainer.world_size > 1:  # every rank's sums, in the same key order
            names = list(sums)
            totals = self.trainer.strategy.reduce(torch.tensor([sums[n] for n in names], dtype=torch.float64,
                                                                device=self.device), reduce_op="sum")
            sums = dict(zip(names, totals.tolist()))
        scores = {name: total / max(count, 1) for name, (total, count) in sums.items()}
        scores["anticipation_sigma"] = self.units.difference(float(self.anticipation.residual_std.mean()))
        return {"scores": {k: (None if math.isnan(v) else v) for k, v in scores.items()},
                "by_lead": None, "by_group": None}

    def configure_optimizers(self):
        return build_optimizer(self.align_net, self.config["optim"], self.trainer.estimated_stepping_batches)
