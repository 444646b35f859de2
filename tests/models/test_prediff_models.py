"""PreDiff networks and stage tasks: shapes, context use, no coupling across the batch, EMA, and overfitting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tests import prediff_tiny as tiny

from earthcast.errors import UserError
from earthcast.models.prediff import (
    AlignmentNet,
    EarthformerUNet,
    FrameAutoencoder,
    build_alignment_net,
    build_autoencoder,
    build_denoiser,
)
from earthcast.tasks.prediff import PreDiffAlignTask, PreDiffLDMTask, PreDiffVAETask

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared 2-core machine every parallel region
    would wait for a descheduled thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unet(**overrides) -> EarthformerUNet:
    options = {"latent_channels": 2, "in_len": 3, "out_len": 2, "latent_hw": 4, **tiny.NETWORK, **overrides}
    return EarthformerUNet(**options)


def test_vae_round_trip_shapes():
    torch.manual_seed(0)
    vae = build_autoencoder(tiny.VAE).eval()
    x = torch.rand(2, 5, 8, 8, 1)
    posterior = vae.encode(x)
    assert posterior.mean.shape == (2, 5, 4, 4, 2) and vae.latent_shape((8, 8)) == (4, 4, 2)
    recon, _ = vae(x, sample=False)
    assert recon.shape == x.shape
    assert vae.decode(posterior.sample()).shape == x.shape
    assert posterior.kl().shape == (2,) and bool((posterior.kl() >= 0).all())
    with pytest.raises(ValueError, match="multiple"):
        vae.encode(torch.rand(1, 1, 7, 7, 1))


def test_paper_scale_vae_maps_128_to_16x16x64():
    """The published SEVIR-LR autoencoder shape, checked on the config without a (slow) forward pass."""
    vae = build_autoencoder(OmegaConf.load(CONFIGS / "prediff_vae_sevirlr.yaml").autoencoder)
    assert isinstance(vae, FrameAutoencoder) and vae.latent_shape((128, 128)) == (16, 16, 64)


@pytest.mark.parametrize("stage, released", [("vae", 84_499_393), ("ldm", 136_817_538), ("align", 8_937_033)])
def test_published_configs_build_the_released_modules(stage, released):
    """The parameter counts of the authors' released SEVIR-LR files (16×16×64 latents, 7 → 6 frames)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"prediff_{stage}_sevirlr.yaml"))
    if stage == "vae":
        module = build_autoencoder(cfg["autoencoder"])
    elif stage == "ldm":
        module = build_denoiser(cfg["denoiser"], 64, 7, 6, (16, 16))
    else:
        module = build_alignment_net(cfg["network"], 64, 7, 6, (16, 16), per_frame=False)
        assert not module.use_context  # the released network ignores the context
    assert sum(p.numel() for p in module.parameters()) == released


@pytest.mark.parametrize("hw", [4, 5])  # 5: patch merging pads the odd side
def test_unet_shapes_and_zero_initial_output(hw):
    torch.manual_seed(0)
    model = unet(latent_hw=hw).eval()
    z_t, context = torch.randn(3, 2, hw, hw, 2), torch.randn(3, 3, hw, hw, 2)
    t = torch.tensor([0, 50, 99])
    out = model(z_t, t, context)
    assert out.shape == z_t.shape
    # the output projection starts at zero: the untrained denoiser predicts ε̂ = 0, the prior mean
    assert torch.count_nonzero(out) == 0


def test_networks_start_with_the_reference_zero_layers():
    """The reference zeroes the last layer of every residual branch (attention projections, FFN outputs, the
    3-D residual blocks' second convolutions) and the denoiser's output projection; nothing else."""
    def zero_weights(model):
        return {name for name, p in model.named_parameters() if p.dim() > 1 and not p.any()}

    expected = ("proj_out.weight", ".fc2.weight", ".proj.weight", ".conv2.weight")
    denoiser = unet(depth=[2, 1])
    zeros = zero_weights(denoiser)
    assert zeros == {n for n, p in denoiser.named_parameters() if p.dim() > 1 and n.endswith(expected)}
    assert "proj_in.conv2.weight" in zeros and "down.0.blocks.1.attn.2.proj.weight" in zeros
    align = AlignmentNet(2, 3, 2, 4, **tiny.NETWORK)
    assert zero_weights(align) == {n for n, p in align.named_parameters()
                                   if p.dim() > 1 and n.endswith(expected) and not n.startswith("readout.")}


def _perturb_output_layer(model: torch.nn.Module) -> None:
    for name, param in model.named_parameters():
        if "proj_out" in name:
            torch.nn.init.normal_(param, std=0.5)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter + 0.05·N(0, 1), as the reference fixtures: the zero-initialised residual branches of
    the published initialisation would otherwise hide how information flows."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def test_unet_has_no_coupling_across_the_batch():
    torch.manual_seed(0)
    model = _perturb(unet()).eval()
    z_t, context, t = torch.randn(3, 2, 4, 4, 2), torch.randn(3, 3, 4, 4, 2), torch.tensor([10, 20, 30])
    out = model(z_t, t, context)
    z_t2, context2 = z_t.clone(), context.clone()
    z_t2[2] += 1.0
    context2[2] -= 1.0
    out2 = model(z_t2, t, context2)
    assert torch.allclose(out[:2], out2[:2], atol=1e-6) and not torch.allclose(out[2], out2[2])
    # and the context and the timestep matter to the denoiser
    assert not torch.allclose(model(z_t, t, context + 0.5), out)
    assert not torch.allclose(model(z_t, t + 1, context), out)


def test_unet_reuses_one_residual_block_per_level():
    """The reference's layout: each level has one time-embedded 3-D residual block, applied before each of
    its `depth` attention blocks."""
    model = unet(depth=[3, 2])
    assert [len(level.blocks) for level in (*model.down, *model.up)] == [3, 2, 3, 2]
    assert all(isinstance(level.res.conv1, torch.nn.Conv3d) for level in (*model.down, *model.up))
    calls = []
    model.down[0].res.register_forward_hook(lambda *_: calls.append(1))
    model(torch.randn(1, 2, 4, 4, 2), torch.tensor([3]), torch.randn(1, 3, 4, 4, 2))
    assert len(calls) == 3


def test_published_alignment_network_ignores_the_context():
    torch.manual_seed(0)
    net = _perturb(AlignmentNet(2, 3, 2, 4, **tiny.NETWORK)).eval()
    z_t, t = torch.randn(2, 2, 4, 4, 2), torch.tensor([5, 60])
    out = net(z_t, t, torch.randn(2, 3, 4, 4, 2))
    assert out.shape == (2, 1) and torch.equal(out, net(z_t, t, None))
    per_frame = net.frame_estimates(z_t, t)  # the released network's output: one estimate per frame
    assert per_frame.shape == (2, 2, 1) and torch.allclose(out, per_frame.mean(dim=1), atol=1e-6)
    z_t2 = z_t.clone()
    z_t2[1] += 1.0  # only sample 1 changes
    changed = net(z_t2, t)
    assert torch.allclose(changed[0], out[0], atol=1e-6) and not torch.isclose(changed[1], out[1]).all()


def test_context_aware_alignment_network_sees_the_context():
    """Ours (`use_context`): U_φ(z_t, t, y) of the paper's equation."""
    torch.manual_seed(0)
    net = _perturb(AlignmentNet(2, 3, 2, 4, use_context=True, **tiny.NETWORK)).eval()
    z_t, t = torch.randn(2, 2, 4, 4, 2), torch.tensor([5, 60])
    context = torch.randn(2, 3, 4, 4, 2)
    out = net(z_t, t, context)
    assert out.shape == (2, 1)
    other = context.clone()
    other[1] = torch.randn(3, 4, 4, 2)  # only sample 1's context changes
    changed = net(z_t, t, other)
    assert not torch.isclose(changed[1], out[1]).all()  # the estimate depends on what was observed ...
    assert torch.allclose(changed[0], out[0], atol=1e-6)  # ... of its own sample only
    per_frame = AlignmentNet(2, 3, 2, 4, per_frame=True, use_context=True, **tiny.NETWORK)
    assert per_frame(z_t, t, context).shape == (2, 2)


def test_ldm_samples_with_the_ema_weights():
    torch.manual_seed(0)
    task = PreDiffLDMTask(tiny.ldm_config(), load_parents=False)
    assert task.sampling_denoiser is task.denoiser_ema and task.pipeline().denoiser is task.denoiser_ema
    assert not any(p.requires_grad for p in task.denoiser_ema.parameters())
    _perturb_output_layer(task.denoiser)
    task.on_train_batch_end(None, None, 0)  # one EMA update at global_step 0: decay min(0.9, 1/10) = 0.1
    online, average = task.denoiser.proj_out.weight, task.denoiser_ema.proj_out.weight
    assert torch.allclose(average, 0.9 * online, atol=1e-6)


def test_align_stage_copies_the_ema_denoiser_from_the_ldm_checkpoint(tmp_path):
    torch.manual_seed(0)
    ldm = PreDiffLDMTask(tiny.ldm_config(), load_parents=False)
    _perturb_output_layer(ldm.denoiser_ema)  # online and EMA weights now differ
    path = tmp_path / "ldm.ckpt"
    torch.save({"state_dict": ldm.state_dict(), "hyper_parameters": {"config": ldm.config}}, path)
    config = tiny.align_config()
    config["model"] = {k: v for k, v in config["model"].items() if k != "ldm"} | {"ldm_ckpt": str(path)}
    align = PreDiffAlignTask(config)
    for name, param in align.denoiser.state_dict().items():
        assert torch.equal(param, ldm.denoiser_ema.state_dict()[name]), name
    assert align.config["model"]["ldm"]["denoiser"] == tiny.NETWORK  # self-contained for `earthcast sample`
    config["model"]["ldm_ckpt"] = str(tmp_path / "missing.ckpt")
    with pytest.raises(UserError, match="checkpoint not found"):
        PreDiffAlignTask(config)
    vae_path = tmp_path / "vae.ckpt"
    vae = PreDiffVAETask(tiny.vae_config())
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": {"config": vae.config}}, vae_path)
    config["model"]["ldm_ckpt"] = str(vae_path)
    with pytest.raises(UserError, match="prediff_vae.*must come from a prediff_ldm"):
        PreDiffAlignTask(config)


def _fit(parameters, loss_fn, steps: int, lr: float) -> tuple[float, float]:
    optimizer = torch.optim.Adam(parameters, lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    with torch.no_grad():
        return first, loss_fn().item()


def test_vae_overfits_a_fixed_batch():
    torch.manual_seed(0)
    task = PreDiffVAETask(tiny.vae_config())
    x = torch.cat([tiny.batch(2)["inputs"], tiny.batch(2)["targets"]], dim=1)
    first, last = _fit(task.autoencoder.parameters(), lambda: task._losses(x, sample=False)[0]["rec"], 120, 3e-3)
    assert last < first / 4


def test_ldm_overfits_fixed_noise_levels():
    """The denoising loss at fixed (t, ε) on one batch falls far below 1, the loss of predicting ε̂ = 0."""
    torch.manual_seed(0)
    task = PreDiffLDMTask(tiny.ldm_config(), load_parents=False)
    data = tiny.batch(2)
    first, last = _fit(task.denoiser.parameters(), lambda: task._loss(data, task.denoiser, seed=0), 80, 3e-3)
    assert first == pytest.approx(1.0, abs=0.35) and last < 0.3


def test_alignment_network_overfits_the_statistic():
    torch.manual_seed(0)
    task = PreDiffAlignTask(tiny.align_config(), load_parents=False)
    data = tiny.batch(4)
    stats = task.constraint.statistic(data["targets"]).to(torch.float64)
    task.anticipation.target_mean.fill_(float(stats.mean()))
    task.anticipation.target_std.fill_(float(stats.std()))
    first, last = _fit(task.align_net.parameters(), lambda: task._loss(data, seed=0)[0], 80, 3e-3)
    assert last < 0.05 and last < first / 5
    # in physical units the fitted estimate is close to the statistic of the real futures
    context, z0 = task.encode(data["inputs"]), task.encode(data["targets"])
    t, _, z_t = task._noised(z0, seed=0)
    with torch.no_grad():
        estimate = task.predict_statistic(z_t, t, context)
    assert torch.allclose(estimate, stats, atol=0.3 * float(stats.std()))


def test_vae_loss_includes_a_small_kl_term():
    task = PreDiffVAETask(tiny.vae_config())
    x = tiny.batch(1)["inputs"]
    losses, recon = task._losses(x, sample=True)
    assert recon.shape == x.shape and losses["kl"] > 0 and task.kl_weight == 1e-6
    assert F.l1_loss(recon, x).item() == pytest.approx(losses["rec"].item(), rel=1e-5)
