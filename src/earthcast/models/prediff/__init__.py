"""PreDiff networks (Gao et al., NeurIPS 2023; github.com/gaozhihan/PreDiff) as the authors released them:
frame-wise VAE, Earthformer-UNet latent denoiser, knowledge-alignment network, and the converter for the
authors' weight files. Training lives in earthcast.lightning.prediff, sampling in earthcast.diffusion."""

from earthcast.models.prediff.align import AlignmentNet, build_alignment_net
from earthcast.models.prediff.denoiser import EarthformerUNet, build_denoiser
from earthcast.models.prediff.vae import (
    DiagonalGaussian,
    FrameAutoencoder,
    PatchDiscriminator,
    build_autoencoder,
    build_discriminator,
)

__all__ = [
    "AlignmentNet",
    "DiagonalGaussian",
    "EarthformerUNet",
    "FrameAutoencoder",
    "PatchDiscriminator",
    "build_alignment_net",
    "build_autoencoder",
    "build_denoiser",
    "build_discriminator",
]
