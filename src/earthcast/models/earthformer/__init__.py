"""Earthformer (Gao et al., NeurIPS 2022): cuboid-attention encoder–decoder, registered as `earthformer`."""

from __future__ import annotations

from earthcast.models.base import MODELS
from earthcast.models.earthformer.model import Earthformer, EarthformerConfig, build_earthformer, config_from

MODELS.register("earthformer")(build_earthformer)

__all__ = ["Earthformer", "EarthformerConfig", "build_earthformer", "config_from"]
