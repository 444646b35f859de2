"""PreDiff (Gao et al., NeurIPS 2023) as three Lightning training stages, chained by checkpoint paths in config:

    prediff_vae    frame-wise KL autoencoder; stores `latent_scale`                       (vae.py)
    prediff_ldm    Earthformer-UNet denoiser on the VAE's latents, model.vae_ckpt         (ldm.py)
    prediff_align  alignment network U_φ(z_t, t[, y]) + anticipation regression for F₀,
                   model.ldm_ckpt                                                           (align.py)

Stages 2 and 3 share their latent setup (latent.py). Each later checkpoint carries its parents' architecture
and frozen weights, so it alone rebuilds the stage (`earthcast eval`, `earthcast sample`). The authors' released
networks become the same stages through released.py (`earthcast convert`).
"""

from earthcast.lightning.prediff.align import PreDiffAlignModule
from earthcast.lightning.prediff.ldm import PreDiffLDMModule
from earthcast.lightning.prediff.vae import PreDiffVAEModule

__all__ = ["PreDiffAlignModule", "PreDiffLDMModule", "PreDiffVAEModule"]
