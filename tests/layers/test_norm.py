import torch
from torch import nn

from earthcast.layers.norm import GroupNorm


def test_float32_is_exactly_torchs_group_norm_with_the_same_keys():
    torch.manual_seed(0)
    ours, theirs = GroupNorm(4, 8), nn.GroupNorm(4, 8)
    with torch.no_grad():
        theirs.weight.normal_(), theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(ours(x), theirs(x))


def test_under_bf16_autocast_it_normalises_in_float32_and_returns_bf16():
    torch.manual_seed(0)
    norm = GroupNorm(2, 4)
    x = (torch.randn(3, 4, 6, 6) * 50 + 100).bfloat16()  # a large mean: bf16 statistics would lose digits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.bfloat16
    expected = nn.functional.group_norm(x.float(), 2, norm.weight, norm.bias, norm.eps)
    assert torch.allclose(out.float(), expected, atol=1e-2)
    out.float().square().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32
