"""PreDiff networks (Gao et al., NeurIPS 2023; github.com/gaozhihan/PreDiff) as the authors released them:
frame-wise VAE, Earthformer-UNet latent denoiser, knowledge-alignment network, the converter for the
authors' weight files, and the inference pipeline that chains them. Training lives in earthcast.tasks.prediff."""

from earthcast.models.prediff.align import AlignmentNet, build_alignment_net
from earthcast.models.prediff.denoiser import EarthformerUNet, build_denoiser, build_unet
from earthcast.models.prediff.pipeline import PreDiffPipeline
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
    "PreDiffPipeline",
    "build_alignment_net",
    "build_autoencoder",
    "build_denoiser",
    "build_discriminator",
    "build_unet",
]
