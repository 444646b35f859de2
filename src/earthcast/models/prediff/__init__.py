"""PreDiff networks (Gao et al., NeurIPS 2023): frame-wise VAE, Earthformer-UNet denoiser, alignment
network. Training lives in earthcast.lightning.prediff, sampling in earthcast.diffusion."""

from earthcast.models.prediff.align import AlignmentNet, build_alignment_net
from earthcast.models.prediff.unet import EarthformerUNet, build_unet
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
    "build_discriminator",
    "build_unet",
]
