"""The latent setup PreDiff's stages 2 and 3 share: a frozen VAE, the latent scale, a noise schedule and a
latent denoiser, described by one spec {vae, latent_scale, denoiser, diffusion}.

A stage is built two ways (diffusers' `from_pretrained` idea; constructors never read files):
  from its parent   training a new stage: `from_config` reads the parent checkpoint named in the config
                    (model.vae_ckpt / model.ldm_ckpt), copies the architecture into this run's config and the
                    frozen weights into its modules, so the new checkpoint is self-contained;
  from a checkpoint eval, predict, sample, resume: the parent's part of the config comes from the checkpoint
                    itself and its weights from its own state dict; the parent file is not needed.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from earthcast.config import plain
from earthcast.diffusion import NoiseSchedule
from earthcast.diffusion.pipeline import PreDiffPipeline
from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint
from earthcast.lightning.module import EarthcastModule
from earthcast.models.prediff import build_autoencoder, build_denoiser


def frame_shape(config: dict) -> tuple[int, int, int, int]:
    """(in_len, out_len, height, width) of the run's dataset."""
    data = config["dataset"]
    return int(data["in_len"]), int(data["out_len"]), int(data["height"]), int(data["width"])


def substate(state: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


class LatentDiffusionModule(EarthcastModule):
    """Subclasses name their parent (`parent_key` in model, `parent_module`), the model keys the parent fills
    in (`parent_keys`), where the latent spec sits in model (`latent_spec`), and `adopt` the parent."""

    parent_key: str
    parent_module: str
    parent_keys: tuple[str, ...]
    frozen: tuple[str, ...] = ("vae",)

    @classmethod
    def from_config(cls, config: dict | DictConfig, checkpoint: Checkpoint | None = None) -> LatentDiffusionModule:
        config = plain(config)
        model = config["model"]
        if checkpoint is not None:
            stored = checkpoint.config.get("model") or {}
            missing = [key for key in cls.parent_keys if key not in stored]
            if missing:
                raise UserError(f"{checkpoint.path} has no model.{missing[0]}; it is not a {config['module']} "
                                f"checkpoint of this earthcast version")
            model.update({key: stored[key] for key in cls.parent_keys})
            return cls(config)
        path = model[cls.parent_key]
        if not path:
            raise UserError(f"model.{cls.parent_key} is not set; pass "
                            f"model.{cls.parent_key}=<{cls.parent_module} run>/checkpoints/best.ckpt")
        parent = Checkpoint.read(path)
        if parent.module != cls.parent_module:
            raise UserError(f"model.{cls.parent_key}={path} is a {parent.module or 'non-earthcast'!r} checkpoint; "
                            f"it must come from a {cls.parent_module} run")
        weights = cls.adopt(config, parent)
        module = cls(config)
        for name, state in weights.items():
            getattr(module, name).load_state_dict(state)
        return module

    @classmethod
    def adopt(cls, config: dict, parent: Checkpoint) -> dict[str, dict]:
        """Copy what this stage takes from its parent into `config`; return {submodule: its weights}."""
        raise NotImplementedError

    @staticmethod
    def latent_spec(model: dict) -> dict:
        raise NotImplementedError

    def __init__(self, config: dict | DictConfig):
        config = plain(config)
        missing = [key for key in self.parent_keys if key not in config["model"]]
        if missing:
            raise UserError(f"this {config['module']} config has no model.{missing[0]}; build it with "
                            f"from_config (from model.{self.parent_key} or a checkpoint)")
        super().__init__(config)
        spec = self.latent_spec(self.config["model"])
        in_len, out_len, height, width = frame_shape(self.config)
        self.vae = build_autoencoder(spec["vae"])
        self.register_buffer("latent_scale", torch.tensor(float(spec["latent_scale"])))
        self.latent_shape = self.vae.latent_shape((height, width))
        self.schedule = NoiseSchedule.from_config(spec["diffusion"])
        self.prediction_type = str(spec["diffusion"]["prediction_type"])
        self.denoiser = build_denoiser(spec["denoiser"], self.latent_shape[2], in_len, out_len, self.latent_shape[:2])

    def freeze(self) -> None:
        for name in self.frozen:
            getattr(self, name).requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:  # frozen parts never switch to training behaviour (dropout)
            getattr(self, name).eval()
        return self

    @property
    def sampling_denoiser(self) -> torch.nn.Module:
        return self.denoiser

    def pipeline(self) -> PreDiffPipeline:
        return PreDiffPipeline(self.vae, self.sampling_denoiser, float(self.latent_scale))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, draw: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents of frames: the VAE posterior's means, or (`draw`) one draw from the posterior."""
        posterior = self.vae.encode(x)
        if not draw:
            return posterior.mean * self.latent_scale
        noise = _randn(posterior.mean, generator)
        return (posterior.mean + (0.5 * posterior.logvar).exp() * noise) * self.latent_scale

    @torch.no_grad()
    def training_latents(self, batch: dict, generator: torch.Generator | None = None):
        """(context latents, future latents) a training or validation step works on. The context is always the
        posterior mean; the future is a posterior draw when model.posterior_sample says so (the published
        recipe draws it, as latent-diffusion training does)."""
        draw = bool(self.config["model"]["posterior_sample"])
        return self.encode(batch["inputs"]), self.encode(batch["targets"], draw, generator)

    def noised(self, z0: torch.Tensor, generator: torch.Generator | None = None):
        """(t, ε, z_t) for a batch: random, or reproducible with a seeded `generator` (validation)."""
        t = torch.randint(0, self.schedule.num_timesteps, (z0.shape[0],), generator=generator).to(z0.device)
        noise = _randn(z0, generator)
        return t, noise, self.schedule.add_noise(z0, noise, t)


def seeded(seed: int | None) -> torch.Generator | None:
    """A CPU generator for reproducible draws (validation batch `seed`); None draws from the global state."""
    return None if seed is None else torch.Generator().manual_seed(seed)


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator).to(like) if generator else torch.randn_like(like)
