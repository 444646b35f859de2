"""PreDiff stage 2: the denoiser's EMA is what samples, a tiny LDM learns, and a stage built from its parent
checkpoint is self-contained."""

from __future__ import annotations

import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.prediff import PreDiffLDMModule, PreDiffVAEModule
from tests.conftest import fit_steps, ldm_config, prediff_batch, vae_config
from tests.models.prediff.test_denoiser import perturb_output_layer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ldm_samples_with_the_ema_weights():
    torch.manual_seed(0)
    module = PreDiffLDMModule(ldm_config())
    assert module.sampling_denoiser is module.denoiser_ema and module.pipeline().denoiser is module.denoiser_ema
    assert not any(p.requires_grad for p in module.denoiser_ema.parameters())
    perturb_output_layer(module.denoiser)
    module.on_train_batch_end(None, None, 0)  # one EMA update at global_step 0: decay min(0.9, 1/10) = 0.1
    online, average = module.denoiser.proj_out.weight, module.denoiser_ema.proj_out.weight
    assert torch.allclose(average, 0.9 * online, atol=1e-6)


def test_ldm_overfits_fixed_noise_levels():
    """The denoising loss at fixed (t, ε) on one batch falls far below 1, the loss of predicting ε̂ = 0."""
    torch.manual_seed(0)
    module = PreDiffLDMModule(ldm_config())
    data = prediff_batch(2)
    first, last = fit_steps(module.denoiser.parameters(), lambda: module._loss(data, module.denoiser, seed=0), 80,
                            3e-3)
    assert first == pytest.approx(1.0, abs=0.35) and last < 0.3


def test_ldm_from_its_vae_checkpoint_copies_config_and_weights(tmp_path):
    torch.manual_seed(0)
    vae = PreDiffVAEModule(vae_config())
    vae.latent_scale.fill_(2.5)
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": {"config": vae.config}}, path)
    config = ldm_config()
    config["model"] = {k: v for k, v in config["model"].items() if k not in ("vae", "latent_scale")}
    config["model"]["vae_ckpt"] = str(path)
    with pytest.raises(UserError, match="no model.vae"):
        PreDiffLDMModule(config)  # the constructor reads no file
    ldm = PreDiffLDMModule.from_config(config)
    assert float(ldm.latent_scale) == 2.5 and ldm.config["model"]["vae"] == vae.config["model"]["autoencoder"]
    for name, param in ldm.vae.state_dict().items():
        assert torch.equal(param, vae.autoencoder.state_dict()[name]), name
