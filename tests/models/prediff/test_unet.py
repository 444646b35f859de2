"""PreDiff's Earthformer-UNet denoiser: shapes, a zero initial output, no coupling across the batch."""

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
    model = unet().eval()
    perturb_output_layer(model)
    z_t, context, t = torch.randn(3, 2, 4, 4, 2), torch.randn(3, 3, 4, 4, 2), torch.tensor([10, 20, 30])
    out = model(z_t, t, context)
    z_t2, context2 = z_t.clone(), context.clone()
    z_t2[2] += 1.0
    context2[2] -= 1.0
    out2 = model(z_t2, t, context2)
    assert torch.allclose(out[:2], out2[:2], atol=1e-6) and not torch.allclose(out[2], out2[2])
    # and the context matters to the denoiser
    assert not torch.allclose(model(z_t, t, context + 0.5), out)
