"""PreDiff's alignment network: the published one ignores the context, ours (`use_context`) reads each
sample's own."""

from __future__ import annotations

import pytest
import torch

from earthcast.models.prediff import AlignmentNet
from tests.models.prediff.test_denoiser import NETWORK, ZERO_LAYERS, perturb, zero_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def test_alignment_network_starts_with_the_reference_zero_layers():
    align = AlignmentNet(2, 3, 2, 4, **NETWORK)
    assert zero_weights(align) == {n for n, p in align.named_parameters()
                                   if p.dim() > 1 and n.endswith(ZERO_LAYERS) and not n.startswith("readout.")}


def test_published_alignment_network_ignores_the_context():
    torch.manual_seed(0)
    net = perturb(AlignmentNet(2, 3, 2, 4, **NETWORK)).eval()
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
    net = perturb(AlignmentNet(2, 3, 2, 4, use_context=True, **NETWORK)).eval()
    z_t, t = torch.randn(2, 2, 4, 4, 2), torch.tensor([5, 60])
    context = torch.randn(2, 3, 4, 4, 2)
    out = net(z_t, t, context)
    assert out.shape == (2, 1)
    other = context.clone()
    other[1] = torch.randn(3, 4, 4, 2)  # only sample 1's context changes
    changed = net(z_t, t, other)
    assert not torch.isclose(changed[1], out[1]).all()  # the estimate depends on what was observed ...
    assert torch.allclose(changed[0], out[0], atol=1e-6)  # ... of its own sample only
    per_frame = AlignmentNet(2, 3, 2, 4, per_frame=True, use_context=True, **NETWORK)
    assert per_frame(z_t, t, context).shape == (2, 2)
