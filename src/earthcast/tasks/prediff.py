"""PreDiff's three training stages as Lightning tasks, chained by checkpoint paths in config.

    prediff_vae    frame-wise KL autoencoder (+ optional patch discriminator); stores `latent_scale`
    prediff_ldm    Earthformer-UNet denoiser on scaled VAE latents (model.vae_ckpt = a prediff_vae ckpt)
    prediff_align  alignment network U_φ(z_t, t, y) + anticipation regression for F₀
                   (model.ldm_ckpt = a prediff_ldm ckpt)

Each later stage copies what it needs from the earlier checkpoint into its own: the architecture configs
(into its stored run config, under model.vae / model.ldm) and the frozen weights (into its state dict). An
LDM or alignment checkpoint is therefore self-contained for `earthcast sample`, which rebuilds the task from
the checkpoint with `load_parents=False` and never touches the parent files again.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from earthcast.diffusion import AnticipationRegression, NoiseSchedule, build_constraint, build_sampler
from earthcast.diffusion.ema import frozen_copy, update_average
from earthcast.errors import UserError
from earthcast.metrics import build_evaluator
from earthcast.models.prediff import (
    PreDiffPipeline,
    build_alignment_net,
    build_autoencoder,
    build_discriminator,
    build_unet,
)
from earthcast.tasks.base import TASK_MODULES, EarthcastTask
from earthcast.tasks.forecast import batch_metadata, evaluator_results
from earthcast.tasks.optim import build_optimizer


def _plain(config) -> dict:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)


def load_stage(path, modules: tuple[str, ...], key: str) -> tuple[dict, dict]:
    """(run config, state dict) of an earlier stage's checkpoint, checked to be one of `modules`."""
    from earthcast.tasks.runtime import load_checkpoint

    if not path:
        raise UserError(f"{key} is not set; pass {key}=<{modules[0]} run>/checkpoints/best.ckpt")
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("hyper_parameters", {}).get("config") or {}
    if config.get("module") not in modules:
        raise UserError(f"{key}={path} is a {config.get('module', 'non-earthcast')!r} checkpoint; it must come "
                        f"from a {' or '.join(modules)} run")
    return config, checkpoint["state_dict"]


def substate(state: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def frame_shape(config: dict) -> tuple[int, int, int, int]:
    """(in_len, out_len, height, width) of the run's dataset."""
    data = config["dataset"]
    return int(data["in_len"]), int(data["out_len"]), int(data["height"]), int(data["width"])


def _ensemble_sink(sink) -> None:
    """Ask a fresh PredictionWriter for a `member` dimension (train/eval build it deterministic)."""
    if sink is not None and getattr(sink, "n_written", None) == 0 and hasattr(sink, "members"):
        sink.members = True


def _log_scalar(task: EarthcastTask, name: str, value, batch_size: int, prog_bar: bool = False) -> None:
    task.log(name, value, prog_bar=prog_bar, sync_dist=name.startswith("val/"), batch_size=batch_size)


# ----------------------------------------------------------------------------------------------- stage 1
@TASK_MODULES.register("prediff_vae")
class PreDiffVAETask(EarthcastTask):
    """L1 reconstruction + kl_weight·KL (+ hinge-GAN from discriminator.start_step) on single frames."""

    def __init__(self, config: dict | DictConfig, load_parents: bool = True):
        super().__init__(config)
        model = self.config["model"]
        self.autoencoder = build_autoencoder(model["autoencoder"])
        self.discriminator = build_discriminator(model.get("discriminator"), self.autoencoder.in_channels)
        self.kl_weight = float(model.get("kl_weight", 1e-6))
        self.frames_per_step = model.get("frames_per_step")
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
        disc_cfg = self.config["model"].get("discriminator") or {}
        if self.discriminator is not None and self.global_step >= int(disc_cfg.get("start_step", 0)):
            # one optimizer for both players: the generator term sees the critic's weights detached, the
            # critic term sees the reconstruction detached, so each gradient reaches only its own player
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            fake_logits = torch.func.functional_call(self.discriminator, frozen, (recon,))
            losses["g"] = -fake_logits.mean()
            losses["d"] = (F.relu(1 - self.discriminator(frames)).mean()
                           + F.relu(1 + self.discriminator(recon.detach())).mean())
            loss = loss + float(disc_cfg.get("weight", 0.5)) * losses["g"] + losses["d"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite VAE loss at step {self.global_step}; lower optim.lr")
        for name, value in losses.items():
            _log_scalar(self, f"train/{name}", value, frames.shape[0])
        _log_scalar(self, "train/loss", loss, frames.shape[0], prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.latent_moments.zero_()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = self._all_frames(batch)
        losses, _ = self._losses(x, sample=False)
        _log_scalar(self, "val/loss", losses["rec"], x.shape[0], prog_bar=True)
        _log_scalar(self, "val/kl", losses["kl"], x.shape[0])
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

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Scores of the reconstructed target frames: the ceiling of any forecast decoded by this VAE."""
        recon, _ = self.autoencoder(batch["targets"], sample=False)
        recon = recon.clamp(0, 1)
        physical = [self._to_physical(v) for v in (recon, batch["targets"], batch["inputs"])]
        meta = batch_metadata(batch)
        self.test_evaluator.update(physical[0], physical[1], context=physical[2], meta=meta)
        if self.prediction_sink is not None:
            self.prediction_sink.write(*physical, meta)

    def on_test_epoch_end(self) -> None:
        self.test_results = evaluator_results(self.test_evaluator)
        self.test_results["scores"]["latent_scale"] = float(self.latent_scale)
        self.test_evaluator.reset()

    def configure_optimizers(self):
        players = nn.ModuleDict({"autoencoder": self.autoencoder})
        if self.discriminator is not None:
            players["discriminator"] = self.discriminator
        return build_optimizer(players, self.config["optim"], self.trainer.estimated_stepping_batches)


# ----------------------------------------------------------------------------------------------- shared
class _LatentTask(EarthcastTask):
    """A frozen VAE (from a prediff_vae checkpoint) and the latent scaling, shared by stages 2 and 3."""

    frozen: tuple[str, ...] = ("vae",)

    def _init_vae(self, vae_config: dict, latent_scale: float, vae_state: dict | None) -> None:
        self.vae = build_autoencoder(vae_config)
        if vae_state is not None:
            self.vae.load_state_dict(vae_state)
        self.register_buffer("latent_scale", torch.tensor(float(latent_scale)))

    def _freeze(self) -> None:
        for name in self.frozen:
            getattr(self, name).requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:  # frozen parts never switch to training behaviour (dropout)
            getattr(self, name).eval()
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).mean * self.latent_scale

    def _noised(self, z0: torch.Tensor, seed: int | None = None):
        """(t, ε, z_t) for a batch: random in training, reproducible per batch index in validation."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.schedule.num_timesteps, (z0.shape[0],), generator=generator).to(z0.device)
        noise = torch.randn(z0.shape, generator=generator).to(z0) if generator else torch.randn_like(z0)
        return t, noise, self.schedule.add_noise(z0, noise, t)


# ----------------------------------------------------------------------------------------------- stage 2
@TASK_MODULES.register("prediff_ldm")
class PreDiffLDMTask(_LatentTask):
    """Latent diffusion: ε- (or v-) prediction MSE; EMA weights for validation, test and sampling."""

    frozen = ("vae", "denoiser_ema")

    def __init__(self, config: dict | DictConfig, load_parents: bool = True):
        config = _plain(config)
        model = config["model"]
        vae_state = None
        if load_parents:
            vae_run, state = load_stage(model.get("vae_ckpt"), ("prediff_vae",), "model.vae_ckpt")
            model["vae"] = vae_run["model"]["autoencoder"]
            model["latent_scale"] = float(state["latent_scale"])
            vae_state = substate(state, "autoencoder")
        elif "vae" not in model:
            raise UserError("this prediff_ldm config has no model.vae; build it from a checkpoint")
        super().__init__(config)
        model = self.config["model"]
        self._init_vae(model["vae"], model["latent_scale"], vae_state)
        in_len, out_len, height, width = frame_shape(self.config)
        self.latent_shape = self.vae.latent_shape((height, width))
        self.schedule = NoiseSchedule.from_config(model["diffusion"])
        self.prediction_type = str(model["diffusion"].get("prediction_type", "eps"))
        self.denoiser = build_unet(model["denoiser"], self.latent_shape[2], in_len, out_len, self.latent_shape[:2])
        self.denoiser_ema = frozen_copy(self.denoiser)
        self.ema = model.get("ema") or {}
        self._freeze()
        self._ema_step = -1
        self.test_evaluator = build_evaluator(self.config["evaluator"])

    @property
    def sampling_denoiser(self) -> nn.Module:
        return self.denoiser_ema if self.ema.get("enabled", True) else self.denoiser

    def pipeline(self) -> PreDiffPipeline:
        return PreDiffPipeline(self.vae, self.sampling_denoiser, float(self.latent_scale))

    def _loss(self, batch: dict, denoiser: nn.Module, seed: int | None = None) -> torch.Tensor:
        context, z0 = self.encode(batch["inputs"]), self.encode(batch["targets"])
        t, noise, z_t = self._noised(z0, seed)
        target = self.schedule.training_target(z0, noise, t, self.prediction_type)
        return F.mse_loss(denoiser(z_t, t, context), target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, self.denoiser)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite diffusion loss at step {self.global_step}; lower optim.lr")
        _log_scalar(self, "train/loss", loss, batch["inputs"].shape[0], prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.global_step != self._ema_step:  # once per optimizer step (accumulation included)
            self._ema_step = self.global_step
            update_average(self.denoiser_ema, self.denoiser, float(self.ema.get("decay", 0.999)), self.global_step)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        size = batch["inputs"].shape[0]
        _log_scalar(self, "val/loss", self._loss(batch, self.sampling_denoiser, seed=batch_idx), size,
                    prog_bar=True)
        if self.ema.get("enabled", True):
            _log_scalar(self, "val/loss_online", self._loss(batch, self.denoiser, seed=batch_idx), size)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Ensemble forecasts with model.sampling (members, sampler) scored like any forecast."""
        sampling = self.config["model"].get("sampling") or {}
        sampler = build_sampler(sampling.get("sampler", {"name": "ddim", "steps": 20}), self.schedule,
                                self.prediction_type)
        generator = torch.Generator(device=batch["inputs"].device).manual_seed(1000 + batch_idx)
        members, _ = self.pipeline().forecast(batch["inputs"], int(sampling.get("members", 4)), sampler,
                                              self.config["dataset"]["out_len"], generator=generator)
        physical = [self._to_physical(v) for v in (members, batch["targets"], batch["inputs"])]
        meta = batch_metadata(batch)
        self.test_evaluator.update(physical[0], physical[1], context=physical[2], meta=meta)
        _ensemble_sink(self.prediction_sink)
        if self.prediction_sink is not None:
            self.prediction_sink.write(*physical, meta)

    def on_test_epoch_end(self) -> None:
        self.test_results = evaluator_results(self.test_evaluator)
        self.test_evaluator.reset()

    def configure_optimizers(self):
        return build_optimizer(self.denoiser, self.config["optim"], self.trainer.estimated_stepping_batches)


# ----------------------------------------------------------------------------------------------- stage 3
@TASK_MODULES.register("prediff_align")
class PreDiffAlignTask(_LatentTask):
    """Alignment network trained on noised latents of real futures to predict the standardised constraint
    statistic; the anticipation regression (F₀ from the context) is fitted on the training split first."""

    frozen = ("vae", "denoiser")

    def __init__(self, config: dict | DictConfig, load_parents: bool = True):
        config = _plain(config)
        model = config["model"]
        vae_state = denoiser_state = None
        if load_parents:
            ldm_run, state = load_stage(model.get("ldm_ckpt"), ("prediff_ldm",), "model.ldm_ckpt")
            ldm_model = ldm_run["model"]
            model["ldm"] = {k: ldm_model[k] for k in ("vae", "latent_scale", "denoiser", "diffusion")}
            vae_state = substate(state, "vae")
            use_ema = (ldm_model.get("ema") or {}).get("enabled", True)
            denoiser_state = substate(state, "denoiser_ema" if use_ema else "denoiser")
            if frame_shape(ldm_run) != frame_shape(config):
                raise UserError(f"model.ldm_ckpt was trained on (in_len, out_len, height, width) = "
                                f"{frame_shape(ldm_run)} but this run's dataset has {frame_shape(config)}; "
                                f"use the same dataset settings")
        elif "ldm" not in model:
            raise UserError("this prediff_align config has no model.ldm; build it from a checkpoint")
        super().__init__(config)
        ldm = self.config["model"]["ldm"]
        self._init_vae(ldm["vae"], ldm["latent_scale"], vae_state)
        in_len, out_len, height, width = frame_shape(self.config)
        self.latent_shape = self.vae.latent_shape((height, width))
        self.schedule = NoiseSchedule.from_config(ldm["diffusion"])
        self.prediction_type = str(ldm["diffusion"].get("prediction_type", "eps"))
        self.denoiser = build_unet(ldm["denoiser"], self.latent_shape[2], in_len, out_len, self.latent_shape[:2])
        if denoiser_state is not None:
            self.denoiser.load_state_dict(denoiser_state)
        self._freeze()
        model = self.config["model"]
        self.constraint = build_constraint(model["constraint"])
        num_outputs = self.constraint.num_outputs(out_len)
        self.align_net = build_alignment_net(model.get("network") or {}, self.latent_shape[2], in_len, out_len,
                                             self.latent_shape[:2], per_frame=num_outputs > 1)
        probe = torch.zeros(1, in_len, 4, 4, 1)
        num_features = self.constraint.context_features(probe).shape[1]
        anticipation = model.get("anticipation") or {}
        self.anticipation = AnticipationRegression(num_features, num_outputs, float(anticipation.get("ridge", 1e-6)))

    def pipeline(self) -> PreDiffPipeline:
        return PreDiffPipeline(self.vae, self.denoiser, float(self.latent_scale))

    def predict_statistic(self, z_t: torch.Tensor, t: torch.Tensor, context_latents: torch.Tensor) -> torch.Tensor:
        """U_φ in the statistic's own units (dataset scale)."""
        return self.anticipation.unstandardize(self.align_net(z_t, t, context_latents).to(torch.float64))

    # -- the anticipation regression: one pass over the training split before the first step
    def on_fit_start(self) -> None:
        if bool(self.anticipation.fitted):
            return
        datamodule = self.trainer.datamodule
        datamodule.setup("fit")
        limit = (self.config["model"].get("anticipation") or {}).get("max_batches")
        self.anticipation.reset()
        for i, batch in enumerate(datamodule.train_dataloader()):
            if limit is not None and i >= int(limit):
                break
            inputs, targets = batch["inputs"].to(self.device), batch["targets"].to(self.device)
            self.anticipation.update(self.constraint.context_features(inputs), self.constraint.statistic(targets))
        if self.anticipation.count < 2:
            raise UserError("the training split gave fewer than 2 sequences to fit the anticipation regression")
        self.anticipation.fit()

    def _loss(self, batch: dict, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        context, z0 = self.encode(batch["inputs"]), self.encode(batch["targets"])
        t, _, z_t = self._noised(z0, seed)
        target = self.anticipation.standardize(self.constraint.statistic(batch["targets"]).to(torch.float64))
        estimate = self.align_net(z_t, t, context)
        return F.mse_loss(estimate, target.to(estimate.dtype)), (estimate - target).abs().detach()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite alignment loss at step {self.global_step}; lower optim.lr")
        _log_scalar(self, "train/loss", loss, batch["inputs"].shape[0], prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, _ = self._loss(batch, seed=batch_idx)
        _log_scalar(self, "val/loss", loss, batch["inputs"].shape[0], prog_bar=True)

    # -- test: how well U_φ and the anticipation regression estimate the statistic (physical units)
    def on_test_epoch_start(self) -> None:
        self._test_sums: dict[str, list[float]] = {}

    def _accumulate(self, name: str, errors: torch.Tensor) -> None:
        total = self._test_sums.setdefault(name, [0.0, 0.0])
        total[0] += float(errors.sum())
        total[1] += errors.numel()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        to_vil = float(self._to_physical(torch.ones(())))
        truth = self.constraint.statistic(batch["targets"]).to(torch.float64)
        context = self.encode(batch["inputs"])
        z0 = self.encode(batch["targets"])
        generator = torch.Generator().manual_seed(batch_idx)
        T = self.schedule.num_timesteps
        for label, low, high in (("low_noise", 0, T // 3), ("mid_noise", T // 3, 2 * T // 3), ("high_noise", 2 * T // 3, T)):
            t = torch.randint(low, high, (z0.shape[0],), generator=generator).to(z0.device)
            noise = torch.randn(z0.shape, generator=generator).to(z0)
            estimate = self.predict_statistic(self.schedule.add_noise(z0, noise, t), t, context)
            self._accumulate(f"align_mae_{label}", (estimate - truth).abs() * to_vil)
        tau, sigma = self.anticipation.expected(self.constraint.context_features(batch["inputs"]))
        self._accumulate("anticipation_mae", (tau - truth).abs() * to_vil)
        self._accumulate("anticipation_within_1sigma", ((tau - truth).abs() <= sigma).to(torch.float64))
        last_frame = batch["inputs"][:, -1:].expand_as(batch["targets"])
        self._accumulate("persistence_mae", (self.constraint.statistic(last_frame) - truth).abs() * to_vil)

    def on_test_epoch_end(self) -> None:
        scores = {name: total / max(count, 1) for name, (total, count) in self._test_sums.items()}
        scores["anticipation_sigma"] = float(self.anticipation.residual_std.mean()) * float(
            self._to_physical(torch.ones(())))
        self.test_results = {"scores": {k: (None if math.isnan(v) else v) for k, v in scores.items()},
                             "by_lead": None, "by_group": None}

    def configure_optimizers(self):
        return build_optimizer(self.align_net, self.config["optim"], self.trainer.estimated_stepping_batches)
