"""PreDiff stage 3: the alignment stage takes the LDM's averaged denoiser, and U_φ learns the statistic."""

from __future__ import annotations

import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.prediff import PreDiffAlignModule, PreDiffLDMModule, PreDiffVAEModule
from tests.conftest import align_config, fit_steps, ldm_config, prediff_batch, vae_config
from tests.models.prediff.test_denoiser import perturb_output_layer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_align_stage_copies_the_ema_denoiser_from_the_ldm_checkpoint(tmp_path):
    torch.manual_seed(0)
    ldm = PreDiffLDMModule(ldm_config())
    perturb_output_layer(ldm.denoiser_ema)  # online and EMA weights now differ
    path = tmp_path / "ldm.ckpt"
    torch.save({"state_dict": ldm.state_dict(), "hyper_parameters": {"config": ldm.config}}, path)
    config = align_config()
    config["model"] = {k: v for k, v in config["model"].items() if k != "ldm"} | {"ldm_ckpt": str(path)}
    align = PreDiffAlignModule.from_config(config)
    for name, param in align.denoiser.state_dict().items():
        assert torch.equal(param, ldm.denoiser_ema.state_dict()[name]), name
    # self-contained for `earthcast sample`
    assert align.config["model"]["ldm"]["denoiser"] == ldm.config["model"]["denoiser"]
    config["model"]["ldm_ckpt"] = str(tmp_path / "missing.ckpt")
    with pytest.raises(UserError, match="checkpoint not found"):
        PreDiffAlignModule.from_config(config)
    vae_path = tmp_path / "vae.ckpt"
    vae = PreDiffVAEModule(vae_config())
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": {"config": vae.config}}, vae_path)
    config["model"]["ldm_ckpt"] = str(vae_path)
    with pytest.raises(UserError, match="prediff_vae.*must come from a prediff_ldm"):
        PreDiffAlignModule.from_config(config)


def test_alignment_network_overfits_the_statistic():
    torch.manual_seed(0)
    module = PreDiffAlignModule(align_config())
    data = prediff_batch(4)
    stats = module.constraint.statistic(data["targets"]).to(torch.float64)
    module.anticipation.target_mean.fill_(float(stats.mean()))
    module.anticipation.target_std.fill_(float(stats.std()))
    first, last = fit_steps(module.align_net.parameters(), lambda: module._loss(data, seed=0)[0], 80, 3e-3)
    assert last < 0.05 and last < first / 5
    # in physical units the fitted estimate is close to the statistic of the real futures
    context, z0 = module.encode(data["inputs"]), module.encode(data["targets"])
    t, _, z_t = module.noised(z0, seed=0)
    with torch.no_grad():
        estimate = module.predict_statistic(z_t, t, context)
    assert torch.allclose(estimate, stats, atol=0.3 * float(stats.std()))
