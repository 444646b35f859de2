"""PreDiff stage 1: the VAE module's losses and that it learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from earthcast.lightning.prediff import PreDiffVAEModule
from tests.conftest import fit_steps, prediff_batch, vae_config

pytestmark = pytest.mark.usefixtures("one_thread")


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
