"""PreDiff stage 1: the VAE module's losses (the published pieces by hand), the two players' optimisation, and
that it learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from earthcast.lightning.prediff import PreDiffVAEModule
from earthcast.lightning.prediff.vae import adaptive_weight, hinge_critic_loss
from earthcast.models.prediff import PatchDiscriminator
from tests.conftest import fit_steps, prediff_batch, vae_config

pytestmark = pytest.mark.usefixtures("one_thread")


def vae_with_critic(**options) -> PreDiffVAEModule:
    config = vae_config()
    config["model"]["discriminator"].update(enabled=True, channels=8, layers=1, norm_groups=4, **options)
    config["model"]["frames_per_step"] = None
    return PreDiffVAEModule(config)


def test_vae_overfits_a_fixed_batch():
    torch.manual_seed(0)
    module = PreDiffVAEModule(vae_config())
    x = torch.cat([prediff_batch(2)["inputs"], prediff_batch(2)["targets"]], dim=1)
    first, last = fit_steps(module.autoencoder.parameters(), lambda: module._losses(x, sample=False)[0]["rec"],
                            120, 3e-3)
    assert last < first / 4


def test_vae_loss_includes_a_small_kl_term():
    module = PreDiffVAEModule(vae_config())
    x = prediff_batch(1)["inputs"]
    losses, recon = module._losses(x, sample=True)
    assert recon.shape == x.shape and losses["kl"] > 0 and module.kl_weight == 1e-6
    assert F.l1_loss(recon, x).item() == pytest.approx(losses["rec"].item(), rel=1e-5)


def test_published_loss_scale_sums_over_each_frame():
    """per_frame_sum (published) = per_pixel_mean (ours) × the pixels of a frame, for L1 and KL alike."""
    torch.manual_seed(0)
    ours = PreDiffVAEModule(vae_config())
    config = vae_config()
    config["model"]["loss_scale"] = "per_frame_sum"
    published = PreDiffVAEModule(config)
    published.autoencoder.load_state_dict(ours.autoencoder.state_dict())
    x = prediff_batch(2)["inputs"]  # 2 × 3 frames of 8 × 8 × 1
    mean_losses, recon = ours._losses(x, sample=False)
    sum_losses, _ = published._losses(x, sample=False)
    assert sum_losses["rec"].item() == pytest.approx((recon - x).abs().sum().item() / 6, rel=1e-6)
    for name in ("rec", "kl"):
        assert sum_losses[name].item() == pytest.approx(64 * mean_losses[name].item(), rel=1e-6)


def test_adaptive_weight_by_hand():
    """W = (1, 2), nll = 3·ΣW, g = ΣW²: ‖∇nll‖ = 3√2, ‖∇g‖ = ‖2W‖ = √20 → 0.5 · 3√2 / (√20 + 10⁻⁴)."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    weight = adaptive_weight(3 * w.sum(), (w**2).sum(), w, factor=0.5)
    assert weight.item() == pytest.approx(0.5 * 3 * math.sqrt(2) / (math.sqrt(20) + 1e-4), rel=1e-6)
    assert not weight.requires_grad
    # clamped to 10⁴ when the adversarial gradient vanishes
    assert adaptive_weight(3 * w.sum(), 0 * w.sum(), w, factor=1.0).item() == pytest.approx(1e4)


def test_hinge_critic_loss_by_hand():
    """real (2, 0.5, −1): relu(1 − r) = (0, 0.5, 2); fake (−2, 0, 1): relu(1 + f) = (0, 1, 2) → ½(5/6 + 1)."""
    loss = hinge_critic_loss(torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0]))
    assert loss.item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))


def test_published_patch_discriminator_is_the_pix2pix_critic():
    """Channels 64, 3 layers, BatchNorm, one input channel: 2,763,585 parameters (the 3-channel critic of
    latent-diffusion autoencoders has 2,765,633; the first conv has 2 × 64 × 16 weights fewer)."""
    critic = PatchDiscriminator(1, 64, 3, "batch")
    assert sum(p.numel() for p in critic.parameters()) == 2_763_585
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules()) == 3
    assert critic(torch.zeros(2, 1, 128, 128, 1)).shape == (2, 1, 14, 14)


def test_adversarial_terms_join_at_start_step_with_the_adaptive_weight():
    torch.manual_seed(0)
    data = prediff_batch(2)
    before = vae_with_critic(start_step=1)  # global_step is 0 outside a trainer
    torch.manual_seed(1)
    loss = before.training_step(data, 0)
    torch.manual_seed(1)
    frames = torch.cat([data["inputs"], data["targets"]], dim=1).flatten(0, 1).unsqueeze(1)
    losses, _ = before._losses(frames, sample=True)
    assert loss.item() == pytest.approx((losses["rec"] + 1e-6 * losses["kl"]).item(), rel=1e-6)

    module = vae_with_critic(start_step=0)
    module.load_state_dict(before.state_dict())
    torch.manual_seed(1)
    loss = module.training_step(data, 0)
    torch.manual_seed(1)
    losses, recon = module._losses(frames, sample=True)
    g = -module.discriminator(recon).mean()
    w = adaptive_weight(losses["rec"], g, module.autoencoder.decoder.conv_out.weight, 0.5)
    d = hinge_critic_loss(module.discriminator(frames), module.discriminator(recon.detach()))
    assert loss.item() == pytest.approx((losses["rec"] + 1e-6 * losses["kl"] + w * g + d).item(), rel=1e-5)


def test_each_player_gets_only_its_own_gradient():
    torch.manual_seed(0)
    module = vae_with_critic(start_step=0)
    data = prediff_batch(2)
    torch.manual_seed(1)
    module.training_step(data, 0).backward()
    critic_grads = [p.grad.clone() for p in module.discriminator.parameters()]
    module.zero_grad()
    torch.manual_seed(1)
    frames = torch.cat([data["inputs"], data["targets"]], dim=1).flatten(0, 1).unsqueeze(1)
    _, recon = module._losses(frames, sample=True)
    hinge_critic_loss(module.discriminator(frames), module.discriminator(recon.detach())).backward()
    for own, alone in zip(critic_grads, (p.grad for p in module.discriminator.parameters())):
        assert torch.allclose(own, alone, atol=1e-6)  # the generator term leaves the critic alone
    assert all(p.grad is None or not p.grad.any() for p in module.autoencoder.parameters())


def test_critic_takes_zero_gradient_steps_before_start_step():
    """Before start_step the critic's parameters stay put while its Adam moments count steps, as the reference's
    separate critic optimizer does."""
    torch.manual_seed(0)
    module = vae_with_critic(start_step=10)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2, weight_decay=0.0)
    critic = [p.detach().clone() for p in module.discriminator.parameters()]
    module.training_step(prediff_batch(2), 0).backward()
    module.on_before_optimizer_step(optimizer)
    optimizer.step()
    for before, param in zip(critic, module.discriminator.parameters()):
        assert torch.equal(before, param) and optimizer.state[param]["step"] == 1


def test_each_player_is_clipped_on_its_own():
    module = vae_with_critic()
    for param in module.autoencoder.parameters():
        param.grad = torch.ones_like(param)
    for param in module.discriminator.parameters():
        param.grad = torch.full_like(param, 1e-4)
    small = [p.grad.clone() for p in module.discriminator.parameters()]
    module.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.autoencoder.parameters()]))
    assert total.item() == pytest.approx(1.0, rel=1e-5)
    assert all(torch.equal(g, p.grad) for g, p in zip(small, module.discriminator.parameters()))
