"""PreDiff stage 2: the denoiser's EMA is what samples (updated per optimizer step or, published, per batch), the
learned log-variance weighting, unscaled or unit-variance latents, posterior draws, a tiny LDM learns, and a stage
built from its parent checkpoint is self-contained."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.prediff import PreDiffLDMModule, PreDiffVAEModule
from earthcast.lightning.prediff import ldm as ldm_stage
from earthcast.lightning.prediff.latent import seeded
from earthcast.lightning.prediff.ldm import TimestepLogVariance
from tests.conftest import fit_steps, ldm_config, prediff_batch, vae_config
from tests.models.prediff.test_denoiser import perturb_output_layer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ldm_samples_with_the_ema_weights():
    torch.manual_seed(0)
    config = ldm_config()
    config["model"]["ema"]["per_optimizer_step"] = False
    module = PreDiffLDMModule(config)
    assert module.sampling_denoiser is module.denoiser_ema and module.pipeline().denoiser is module.denoiser_ema
    assert not any(p.requires_grad for p in module.denoiser_ema.parameters())
    perturb_output_layer(module.denoiser)
    module.on_train_batch_end(None, None, 0)  # the first update: decay min(0.9, 2/11) = 2/11; the average was 0
    online, average = module.denoiser.proj_out.weight, module.denoiser_ema.proj_out.weight
    assert torch.allclose(average, 9 / 11 * online, atol=1e-6)


class Batches(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.items = [{k: v[0] for k, v in prediff_batch(1, seed=i).items()} for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def fit_tiny(module, batches: int, accumulate: int) -> None:
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=0, accumulate_grad_batches=accumulate,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Batches(batches), batch_size=1))


@pytest.mark.parametrize("per_optimizer_step, expected", [(True, [1, 2]), (False, [1, 2, 3, 4])])
def test_ema_updates_per_optimizer_step_or_per_batch(monkeypatch, per_optimizer_step, expected):
    """Four batches, two accumulated per optimizer step: ours averages after each of the 2 steps, the published
    recipe after each of the 4 batches; the update count sets the warm-up decay min(d, (1 + n)/(10 + n))."""
    torch.manual_seed(0)
    config = ldm_config()
    config["model"]["ema"]["per_optimizer_step"] = per_optimizer_step
    module = PreDiffLDMModule(config)
    counts = []
    monkeypatch.setattr(ldm_stage, "update_average", lambda average, model, decay, n: counts.append(n))
    fit_tiny(module, batches=4, accumulate=2)
    assert counts == expected


def test_learned_logvar_weighting_by_hand():
    """Per sample mse·exp(−s_t) + s_t, averaged: s = (ln 2, −1) at t = (1, 2), mse = (0.5, 2)."""
    weighting = TimestepLogVariance(4, init=0.0)
    with torch.no_grad():
        weighting.logvar.copy_(torch.tensor([0.0, math.log(2.0), -1.0, 0.5]))
    loss = weighting(torch.tensor([0.5, 2.0]), torch.tensor([1, 2]))
    assert loss.item() == pytest.approx(((0.25 + math.log(2.0)) + (2.0 * math.e - 1.0)) / 2, rel=1e-6)
    loss.backward()  # ∂/∂s_t = (1 − mse·exp(−s_t)) / 2; zero at s_t = ln mse, untouched timesteps get nothing
    assert weighting.logvar.grad.tolist() == pytest.approx([0.0, 0.375, (1 - 2.0 * math.e) / 2, 0.0], rel=1e-6)


def test_learn_logvar_trains_the_log_variances_with_the_denoiser():
    torch.manual_seed(0)
    plain = PreDiffLDMModule(ldm_config())
    assert plain.loss_weight is None and not any(k.startswith("loss_weight") for k in plain.state_dict())
    config = ldm_config()
    config["model"]["learn_logvar"]["enabled"] = True
    module = PreDiffLDMModule(config)
    assert module.loss_weight.logvar.shape == (module.schedule.num_timesteps,)
    data = prediff_batch(2)
    torch.manual_seed(1)
    loss = module.training_step(data, 0)
    torch.manual_seed(1)
    mse, t = module._errors(data, module.denoiser)
    assert loss.item() == pytest.approx(mse.mean().item(), rel=1e-6)  # s_t = 0 at the start: the plain MSE
    fit_tiny(module, batches=2, accumulate=1)
    assert module.loss_weight.logvar.detach().abs().max() > 0  # the optimizer moved some s_t


def ldm_config_over_a_vae_checkpoint(tmp_path):
    """A VAE stage (latent scale 2.5) saved as a checkpoint, and an LDM config that names it instead of
    carrying the VAE inline."""
    torch.manual_seed(0)
    vae = PreDiffVAEModule(vae_config())
    vae.latent_scale.fill_(2.5)
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": {"config": vae.config}}, path)
    config = ldm_config()
    config["model"] = {k: v for k, v in config["model"].items() if k not in ("vae", "latent_scale")}
    config["model"]["vae_ckpt"] = str(path)
    return vae, config


@pytest.mark.parametrize("unit_variance", [True, False])
def test_unit_variance_latents_take_the_vae_scale_or_none(tmp_path, unit_variance):
    vae, config = ldm_config_over_a_vae_checkpoint(tmp_path)
    config["model"]["unit_variance_latents"] = unit_variance
    ldm = PreDiffLDMModule.from_config(config)
    scale = 2.5 if unit_variance else 1.0
    x = prediff_batch(1)["inputs"]
    assert ldm.config["model"]["latent_scale"] == scale and ldm.pipeline().latent_scale == scale
    assert torch.allclose(ldm.encode(x), vae.autoencoder.encode(x).mean * scale)


def test_posterior_sample_draws_the_future_latents():
    """Published: the futures' latents are one draw from the VAE posterior (reproducible with a seed); the
    context's are the posterior mean. Ours: means for both."""
    torch.manual_seed(0)
    data = prediff_batch(4)
    means = PreDiffLDMModule(ldm_config())
    config = ldm_config()
    config["model"]["posterior_sample"] = True
    module = PreDiffLDMModule(config)
    module.vae.load_state_dict(means.vae.state_dict())
    posterior = module.vae.encode(data["targets"])
    context, future = module.training_latents(data, seeded(0))
    assert torch.equal(context, module.encode(data["inputs"]))
    assert torch.equal(future, module.training_latents(data, seeded(0))[1])
    standardised = (future - posterior.mean) / (0.5 * posterior.logvar).exp()
    assert abs(float(standardised.std()) - 1) < 0.15 and abs(float(standardised.mean())) < 0.15
    assert torch.equal(means.training_latents(data, seeded(0))[1], posterior.mean)


def test_ldm_overfits_fixed_noise_levels():
    """The denoising loss at fixed (t, ε) on one batch falls far below 1, the loss of predicting ε̂ = 0."""
    torch.manual_seed(0)
    module = PreDiffLDMModule(ldm_config())
    data = prediff_batch(2)
    first, last = fit_steps(module.denoiser.parameters(), lambda: module._loss(data, module.denoiser, seed=0), 80,
                            3e-3)
    assert first == pytest.approx(1.0, abs=0.35) and last < 0.3


def test_ldm_from_its_vae_checkpoint_copies_config_and_weights(tmp_path):
    vae, config = ldm_config_over_a_vae_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no model.vae"):
        PreDiffLDMModule(config)  # the constructor reads no file
    ldm = PreDiffLDMModule.from_config(config)
    assert float(ldm.latent_scale) == 2.5 and ldm.config["model"]["vae"] == vae.config["model"]["autoencoder"]
    for name, param in ldm.vae.state_dict().items():
        assert torch.equal(param, vae.autoencoder.state_dict()[name]), name
