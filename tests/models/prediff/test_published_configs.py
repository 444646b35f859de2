"""The paper-scale presets build the modules of the authors' released SEVIR-LR files."""

from __future__ import annotations

import pytest

from earthcast.models.prediff import build_alignment_net, build_autoencoder, build_denoiser
from tests.conftest import run_config


@pytest.mark.parametrize("stage, released", [("vae", 84_499_393), ("ldm", 136_817_538), ("align", 8_937_033)])
def test_published_configs_build_the_released_modules(stage, released):
    """The parameter counts of the released files (16×16×64 latents, 7 → 6 frames)."""
    model = run_config([f"experiment=prediff_{stage}_sevirlr"])["model"]
    if stage == "vae":
        module = build_autoencoder(model["autoencoder"])
    elif stage == "ldm":
        module = build_denoiser(model["denoiser"], 64, 7, 6, (16, 16))
    else:
        module = build_alignment_net(model["network"], 64, 7, 6, (16, 16), per_frame=False)
        assert not module.use_context  # the released network ignores the context
    assert sum(p.numel() for p in module.parameters()) == released
