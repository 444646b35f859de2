"""PreDiff stage 3: the alignment stage takes the LDM's averaged denoiser, U_φ learns the statistic, and the
published and our regression targets (per frame or overall, dataset scale or standardised, context or not)."""

from __future__ import annotations

import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.prediff import PreDiffAlignModule, PreDiffLDMModule, PreDiffVAEModule
from earthcast.lightning.prediff.latent import seeded
from tests.conftest import align_config, fit_steps, ldm_config, prediff_batch, vae_config
from tests.models.prediff.test_denoiser import perturb, perturb_output_layer

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
    t, _, z_t = module.noised(z0, seeded(0))
    with torch.no_grad():
        estimate = module.predict_statistic(z_t, t, context)
    assert torch.allclose(estimate, stats, atol=0.3 * float(stats.std()))


def published_options(config: dict, **options) -> dict:
    config["model"].update(options)
    return config


@pytest.mark.parametrize("use_context", [False, True])
def test_alignment_stage_reads_the_context_only_when_asked(use_context):
    torch.manual_seed(0)
    config = align_config()
    config["model"]["network"]["use_context"] = use_context
    module = PreDiffAlignModule(config)
    perturb(module.align_net)
    data, other = prediff_batch(2, seed=0), prediff_batch(2, seed=1)
    z0 = module.encode(data["targets"])
    t, _, z_t = module.noised(z0, seeded(0))
    with torch.no_grad():
        estimates = [module.predict_statistic(z_t, t, module.encode(d["inputs"])) for d in (data, other)]
    assert torch.equal(*estimates) != use_context


@pytest.mark.parametrize("frame_targets, standardize", [(True, False), (False, True), (True, True)])
def test_alignment_target_by_hand(frame_targets, standardize):
    """Published (frame targets, dataset scale): each future frame's estimate against that frame's mean; ours: the
    frames' mean estimate against the mean over all future frames, standardised by the training moments."""
    torch.manual_seed(0)
    module = PreDiffAlignModule(published_options(align_config(), frame_targets=frame_targets,
                                                  standardize_statistic=standardize))
    module.anticipation.target_mean.fill_(0.2)
    module.anticipation.target_std.fill_(0.05)
    perturb(module.align_net)
    data = prediff_batch(3)
    generator = seeded(7)
    context, z0 = module.training_latents(data, generator)
    t, _, z_t = module.noised(z0, generator)
    with torch.no_grad():
        per_frame = module.align_net.frame_estimates(z_t, t, context)[..., 0]  # B × T_out
        frame_means = data["targets"].mean(dim=(2, 3, 4))  # each future frame's mean, B × T_out
        if frame_targets:
            estimate, target = per_frame, frame_means
        else:
            estimate, target = per_frame.mean(dim=1, keepdim=True), frame_means.mean(dim=1, keepdim=True)
        if standardize:
            target = (target - 0.2) / 0.05
        expected = ((estimate - target) ** 2).mean()
        assert module._loss(data, seed=7)[0].item() == pytest.approx(expected.item(), rel=1e-5)
        # the guidance reads the frames' mean, back on the dataset scale
        statistic = module.predict_statistic(z_t, t, context)
        mean_estimate = per_frame.mean(dim=1, keepdim=True).double()
        assert torch.allclose(statistic, mean_estimate * 0.05 + 0.2 if standardize else mean_estimate)


def test_published_alignment_target_is_learnable():
    """The published target (per-frame means on the dataset scale) from noised posterior draws: the loss falls."""
    torch.manual_seed(0)
    module = PreDiffAlignModule(published_options(align_config(), frame_targets=True, standardize_statistic=False,
                                                  posterior_sample=True))
    data = prediff_batch(4)
    first, last = fit_steps(module.align_net.parameters(), lambda: module._loss(data, seed=0)[0], 60, 3e-3)
    assert last < first / 5
