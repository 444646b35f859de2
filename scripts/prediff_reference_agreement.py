"""How closely earthcast's PreDiff networks reproduce the authors' code: max |ours − reference| / max |reference|
for every output of the reference fixtures (the table in docs/pretrained.md).

    PYTHONPATH=. .venv/bin/python scripts/prediff_reference_agreement.py

The fixtures sit beside the checkout (../shared/reference_fixtures); the networks are built and loaded exactly
as tests/models/test_prediff_reference.py does.
"""

from __future__ import annotations

import torch
from tests.models.test_prediff_reference import (
    FIXTURES,
    loaded,
    relative_error,
    small_align,
    small_denoiser,
    small_vae,
)


def main() -> None:
    fixtures = {name: torch.load(FIXTURES / f"prediff_{name}_small.pt", weights_only=True)
                for name in ("vae", "unet", "align")}
    vae_fixture = fixtures["vae"]
    vae = loaded(small_vae(vae_fixture), "vae", vae_fixture["state_dict"])
    frames = {k: vae_fixture["inputs"][k].permute(0, 2, 3, 1).unsqueeze(1) for k in ("x", "z")}
    with torch.no_grad():
        outputs = {"moments": vae.encode(frames["x"]).moments, "decoded": vae.decode(frames["z"]),
                   "recon": vae(frames["x"], sample=False)[0]}
        for name, value in outputs.items():
            error = relative_error(value[:, 0].permute(0, 3, 1, 2), vae_fixture["outputs"][name])
            print(f"vae {name}: {error:.1e}")
        unet = fixtures["unet"]
        denoiser = loaded(small_denoiser(unet), "denoiser", unet["state_dict"])
        inputs = unet["inputs"]
        error = relative_error(denoiser(inputs["x_t"], inputs["t"], inputs["cond"]), unet["outputs"]["out"])
        print(f"denoiser: {error:.1e}")
        align_fixture = fixtures["align"]
        align = loaded(small_align(align_fixture), "align", align_fixture["state_dict"])
        inputs = align_fixture["inputs"]
        error = relative_error(align.frame_estimates(inputs["z_t"], inputs["t"], inputs["zc"]),
                               align_fixture["outputs"]["out"])
        print(f"alignment network: {error:.1e}")


if __name__ == "__main__":
    main()
