"""The reference implementations' weight initialisation (Earthformer's `apply_initialization` with its
default modes; PreDiff uses the same functions with some layers zeroed), applied by each layer to its own
parameters. Layers the reference leaves alone keep PyTorch's default initialisation, and so do ours where the
reference does (convolutions of the stem and head, the global-vector projections; in PreDiff also the
upsampling convolutions and the timestep embedding)."""

from __future__ import annotations

from torch import nn


def init_linear(layer: nn.Module) -> None:
    """Linear layers: N(0, 1/fan_in) weights (Kaiming, linear gain), zero bias."""
    if isinstance(layer, nn.Linear):
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="linear")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def init_conv(layer: nn.Module) -> None:
    """Convolutions: Kaiming normal for a leaky ReLU of slope 0.1, fan-out mode, zero bias."""
    if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
        nn.init.kaiming_normal_(layer.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def init_embedding(layer: nn.Module) -> None:
    """Embeddings: truncated N(0, 0.02²)."""
    if isinstance(layer, nn.Embedding):
        nn.init.trunc_normal_(layer.weight, std=0.02)


def zero_linear(layer: nn.Module) -> None:
    """Zero weights and bias (the reference's linear mode '2'): a residual branch ending in this layer starts
    as the identity, as PreDiff's denoiser does for its FFN outputs, attention projections and output layer."""
    if isinstance(layer, nn.Linear):
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
