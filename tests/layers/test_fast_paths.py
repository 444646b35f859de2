"""The speed-ups of the Earthformer compute exactly what their plain formulations compute (forward and
gradients): folded upsampling and the explicit CPU-training attention vs SDPA; the CPU dropout keeps the
rate, scaling and gradient of dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from earthcast.layers import attention as attention_module
from earthcast.layers.blocks import Upsample, frames, unframes
from earthcast.layers.dropout import Dropout, dropout


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("scale, hw", [(2, (4, 6)), (3, (3, 5)), (2, (1, 1))])
def test_folded_upsample_equals_nearest_then_conv(scale, hw):
    torch.manual_seed(0)
    up = Upsample(5, 7, (scale * hw[0], scale * hw[1])).double()
    x = torch.randn(2, 3, *hw, 5, dtype=torch.float64, requires_grad=True)
    folded = up(x)
    plain = unframes(up.conv(F.interpolate(frames(x), scale_factor=scale, mode="nearest")), 2)
    assert folded.shape == plain.shape == (2, 3, scale * hw[0], scale * hw[1], 7)
    assert torch.allclose(folded, plain, atol=1e-12)
    grad = torch.randn_like(plain)
    grads_folded = torch.autograd.grad(folded, [x, up.conv.weight, up.conv.bias], grad)
    grads_plain = torch.autograd.grad(plain, [x, up.conv.weight, up.conv.bias], grad)
    for a, b in zip(grads_folded, grads_plain):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("with_mask", [False, True])
def test_explicit_attention_equals_sdpa(with_mask):
    """attend() writes softmax(q·kᵀ·s + mask)·v out for CPU training; it must match SDPA, gradients too."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = None
    if with_mask:
        mask = torch.randn(1, 2, 5, 5, dtype=torch.float64).masked_fill(torch.rand(1, 1, 5, 5) < 0.3, -1e30)
        mask[..., 0] = 0.0  # every query keeps a key
        mask.requires_grad_(True)
    explicit = attention_module.attend(q, k, v, mask, 0.0, 0.5)
    with torch.no_grad():
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5)
    assert torch.allclose(explicit, reference, atol=1e-12)
    inputs = [q, k, v] + ([mask] if with_mask else [])
    grads = torch.autograd.grad(explicit.square().sum(), inputs)
    copies = [t.detach().requires_grad_(True) for t in inputs]
    out = F.scaled_dot_product_attention(*copies[:3], attn_mask=copies[3] if with_mask else None, scale=0.5)
    for grad, ref in zip(grads, torch.autograd.grad(out.square().sum(), copies)):
        assert torch.allclose(grad, ref, atol=1e-10)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_rate_scale_and_gradient(p):
    torch.manual_seed(0)
    layer = Dropout(p)
    x = torch.ones(1001, 999, requires_grad=True)  # odd count: the last 32-bit draw is half used
    y = layer(x)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5  # within 5 standard errors
    scale = y[y != 0].unique()
    assert len(scale) == 1 and abs(scale.item() - 1 / (1 - p)) < 1e-3  # kept values scaled by 1/(1 − p')
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask and scale
    torch.manual_seed(0)
    assert torch.equal(layer(x), y)  # the torch generator drives it: seeded runs repeat
    assert torch.equal(layer.eval()(x), x)


def test_fast_dropout_edge_cases():
    x = torch.randn(3, 5)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    both_halves = dropout(torch.ones(2, 4096), 0.25).view(-1, 2)  # each half of a draw drops at the rate
    assert ((both_halves == 0).float().mean(0) - 0.25).abs().max() < 0.05
    with pytest.raises(ValueError):
        Dropout(1.5)
