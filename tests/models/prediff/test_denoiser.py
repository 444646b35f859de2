"""PreDiff's Earthformer-UNet denoiser: shapes, the reference's zero-initialised layers and level layout, no
coupling across the batch."""

from __future__ import annotations

import pytest
import torch

from earthcast.models.prediff import EarthformerUNet

pytestmark = pytest.mark.usefixtures("one_thread")
NETWORK = {"base_units": 8, "depth": [1, 1], "num_heads": 2, "norm_groups": 4, "attn_drop": 0.0, "proj_drop": 0.0,
           "ffn_drop": 0.0}


def unet(**overrides) -> EarthformerUNet:
    return EarthformerUNet(**{"latent_channels": 2, "in_len": 3, "out_len": 2, "latent_hw": 4, **NETWORK, **overrides})


def perturb_output_layer(model: torch.nn.Module) -> None:
    """The output projection starts at zero; random weights there make differences visible."""
    for name, param in model.named_parameters():
        if "proj_out" in name:
            torch.nn.init.normal_(param, std=0.5)


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter + 0.05·N(0, 1), as the reference fixtures: the zero-initialised residual branches of
    the published initialisation would otherwise hide how information flows."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def zero_weights(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.dim() > 1 and not p.any()}


#: the last layer of every residual branch (attention projections, FFN outputs, the 3-D residual blocks' second
#: convolutions) and the denoiser's output projection: the layers the reference initialises at zero
ZERO_LAYERS = ("proj_out.weight", ".fc2.weight", ".proj.weight", ".conv2.weight")


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


def test_unet_has_no_coupling_across_the_batch():
    torch.manual_seed(0)
    model = perturb(unet()).eval()
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


def test_unet_starts_with_the_reference_zero_layers():
    denoiser = unet(depth=[2, 1])
    zeros = zero_weights(denoiser)
    assert zeros == {n for n, p in denoiser.named_parameters() if p.dim() > 1 and n.endswith(ZERO_LAYERS)}
    assert "proj_in.conv2.weight" in zeros and "down.0.blocks.1.attn.2.proj.weight" in zeros


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
