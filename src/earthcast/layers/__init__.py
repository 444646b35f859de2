"""Building blocks shared by model families: cuboid attention (Earthformer, Gao et al. 2022) and the layers
around it. Earthformer (models/earthformer) and PreDiff's denoiser and alignment network (models/prediff)
are built from these."""
