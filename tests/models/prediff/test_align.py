"""PreDiff's alignment network: it reads each sample's own context."""

from __future__ import annotations

import pytest
import torch

from earthcast.models.prediff import AlignmentNet
from tests.models.prediff.test_unet import NETWORK

pytestmark = pytest.mark.usefixtures("one_thread")


def test_alignment_network_sees_the_context():
    torch.manual_seed(0)
    net = AlignmentNet(2, 3, 2, 4, **NETWORK).eval()
    z_t, t = torch.randn(2, 2, 4, 4, 2), torch.tensor([5, 60])
    context = torch.randn(2, 3, 4, 4, 2)
    out = net(z_t, t, context)
    assert out.shape == (2, 1)
    other = context.clone()
    other[1] = torch.randn(3, 4, 4, 2)  # only sample 1's context changes
    changed = net(z_t, t, other)
    assert not torch.isclose(changed[1], out[1]).all()  # the estimate depends on what was observed ...
    assert torch.allclose(changed[0], out[0], atol=1e-6)  # ... of its own sample only
    per_frame = AlignmentNet(2, 3, 2, 4, per_frame=True, **NETWORK)
    assert per_frame(z_t, t, context).shape == (2, 2)
