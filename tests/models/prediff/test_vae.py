"""PreDiff's frame-wise VAE: shapes, and the published SEVIR-LR latent size."""

from __future__ import annotations

import pytest
import torch

from earthcast.models.prediff import FrameAutoencoder, build_autoencoder
from tests.conftest import run_config, vae_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vae_round_trip_shapes():
    torch.manual_seed(0)
    vae = build_autoencoder(vae_config()["model"]["autoencoder"]).eval()
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
    vae = build_autoencoder(run_config(["experiment=prediff_vae_sevirlr"])["model"]["autoencoder"])
    assert isinstance(vae, FrameAutoencoder) and vae.latent_shape((128, 128)) == (16, 16, 64)
