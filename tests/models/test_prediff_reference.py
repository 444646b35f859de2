"""The published PreDiff modules compute what the authors' code computes (github.com/gaozhihan/PreDiff).

Each fixture holds one of the authors' modules at reduced width (same layers and key names as the released
full-size files), its state_dict, inputs and the outputs the reference computed. Our module is built from the
published config (configs/model/prediff_*_sevirlr.yaml) at the fixture's width, the state_dict goes through
the converter, and every output must equal the reference's to float32 round-off (1e-4 of its own largest
value; the floor against a float64 run is ~1e-5). Bad weight files get one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from earthcast.errors import UserError
from earthcast.models.prediff import build_alignment_net, build_autoencoder, build_denoiser
from earthcast.models.prediff.convert import convert_prediff, describe, load_prediff_weights
from tests.conftest import run_config

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "reference_fixtures"
pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"reference fixtures not found at {FIXTURES} (they sit beside the checkout in CI, not on user machines)")
TOLERANCE = 1e-4
LATENT = dict(latent_channels=64, in_len=7, out_len=6, latent_hw=(16, 16))  # the fixtures' (full) data shapes


@pytest.fixture(scope="module")
def fixtures() -> dict:
    return {name: torch.load(FIXTURES / f"prediff_{name}_small.pt", weights_only=True)
            for name in ("vae", "unet", "align")}


def published(name: str, section: str, **width) -> dict:
    cfg = run_config([f"experiment=prediff_{name}_sevirlr"])["model"][section]
    return {**cfg, **width}


def small_vae(fixture: dict) -> torch.nn.Module:
    return build_autoencoder(published("vae", "autoencoder", channels=fixture["config"]["block_out_channels"]))


def small_denoiser(fixture: dict) -> torch.nn.Module:
    return build_denoiser(published("ldm", "denoiser", base_units=fixture["config"]["base_units"]),
                          LATENT["latent_channels"], LATENT["in_len"], LATENT["out_len"], LATENT["latent_hw"])


def small_align(fixture: dict) -> torch.nn.Module:
    return build_alignment_net(published("align", "network", base_units=fixture["config"]["base_units"]),
                               **LATENT, per_frame=True)


def loaded(model: torch.nn.Module, kind: str, state_dict: dict) -> torch.nn.Module:
    model.load_state_dict(convert_prediff(kind, state_dict, model), strict=True)
    return model.eval()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    return float((ours - reference).abs().max() / reference.abs().max())


def test_vae_reproduces_the_reference(fixtures):
    fixture = fixtures["vae"]
    vae = loaded(small_vae(fixture), "vae", fixture["state_dict"])
    # the reference runs on single frames, channels-first; ours on channels-last sequences
    x = fixture["inputs"]["x"].permute(0, 2, 3, 1).unsqueeze(1)
    z = fixture["inputs"]["z"].permute(0, 2, 3, 1).unsqueeze(1)
    with torch.no_grad():
        posterior = vae.encode(x)
        ours = {"moments": posterior.moments, "mean": posterior.mean, "logvar": posterior.logvar,
                "decoded": vae.decode(z), "recon": vae(x, sample=False)[0]}
    for name, value in ours.items():
        error = relative_error(value[:, 0].permute(0, 3, 1, 2), fixture["outputs"][name])
        assert error <= TOLERANCE, f"{name}: max |ours − reference| = {error:.2e} of max |reference|"


def test_denoiser_reproduces_the_reference(fixtures):
    fixture = fixtures["unet"]
    denoiser = loaded(small_denoiser(fixture), "denoiser", fixture["state_dict"])
    inputs = fixture["inputs"]
    with torch.no_grad():
        out = denoiser(inputs["x_t"], inputs["t"], inputs["cond"])
    error = relative_error(out, fixture["outputs"]["out"])
    assert error <= TOLERANCE, f"max |ours − reference| = {error:.2e} of max |reference|"


def test_alignment_network_reproduces_the_reference(fixtures):
    fixture = fixtures["align"]
    align = loaded(small_align(fixture), "align", fixture["state_dict"])
    inputs, reference = fixture["inputs"], fixture["outputs"]["out"]
    with torch.no_grad():
        per_frame = align.frame_estimates(inputs["z_t"], inputs["t"], inputs["zc"])
        guided = align(inputs["z_t"], inputs["t"], inputs["zc"])  # per_frame: the same values, (B, T_out)
    error = relative_error(per_frame, reference)  # small magnitudes: against its own max
    assert error <= TOLERANCE, f"max |ours − reference| = {error:.2e} of max |reference|"
    assert torch.equal(guided, per_frame[..., 0])


def test_published_files_and_lightning_checkpoints_load_from_disk(fixtures, tmp_path):
    """Released files are plain state_dicts; the reference's training saves Lightning checkpoints whose
    state_dict holds the module under a prefix (the VAE of a latent-diffusion run under first_stage_model.)."""
    fixture = fixtures["unet"]
    plain = tmp_path / "denoiser.pt"
    torch.save(fixture["state_dict"], plain)
    lightning = tmp_path / "ldm.ckpt"
    prefixed = {f"torch_nn_module.{k}": v for k, v in fixture["state_dict"].items()}
    prefixed |= {f"first_stage_model.{k}": v for k, v in fixtures["vae"]["state_dict"].items()}
    torch.save({"state_dict": prefixed | {"logvar": torch.zeros(1000)}, "epoch": 3}, lightning)
    inputs = fixture["inputs"]
    outputs = []
    for path in (plain, lightning):
        denoiser = load_prediff_weights(small_denoiser(fixture), path, "denoiser").eval()
        with torch.no_grad():
            outputs.append(denoiser(inputs["x_t"], inputs["t"], inputs["cond"]))
    assert torch.equal(outputs[0], outputs[1])
    vae = load_prediff_weights(small_vae(fixtures["vae"]), lightning, "vae")
    assert torch.equal(vae.to_moments.weight, fixtures["vae"]["state_dict"]["quant_conv.weight"])
    # a latent-diffusion checkpoint's moving average (LitEma: names without dots) is what the reference samples
    # with, and what converts unless ema=False
    averaged = {f"model_ema.{k.replace('.', '')}": v + 1 for k, v in fixture["state_dict"].items()
                if not k.endswith("relative_position_index")}
    torch.save({"state_dict": prefixed | averaged | {"model_ema.num_updates": torch.tensor(7)}}, lightning)
    denoiser = load_prediff_weights(small_denoiser(fixture), lightning, "denoiser")
    assert torch.equal(denoiser.proj_out.weight, fixture["state_dict"]["final_proj.weight"] + 1)
    denoiser = load_prediff_weights(small_denoiser(fixture), lightning, "denoiser", ema=False)
    assert torch.equal(denoiser.proj_out.weight, fixture["state_dict"]["final_proj.weight"])


def test_describe_tells_the_files_apart(fixtures):
    assert describe(fixtures["vae"]["state_dict"]) == \
        "a PreDiff VAE (AutoencoderKL) with channels [32, 64, 96, 96], 64 latent channels"
    assert describe(fixtures["unet"]["state_dict"]) == \
        "a PreDiff denoiser (CuboidTransformerUNet) with base_units 32, 13 frames of 16×16×64 latents"
    assert describe(fixtures["align"]["state_dict"]) == ("a PreDiff alignment network (NoisyCuboidTransformerEncoder)"
                                                         " with base_units 32, 6 frames of 16×16×64 latents")
    earthformer = torch.load(FIXTURES / "earthformer_sevirlr.pt", weights_only=True)["state_dict"]
    assert describe(earthformer).endswith(", not a PreDiff module")


def _one_line_error(build, kind: str, state_dict: dict, tmp_path: Path, *fragments: str) -> None:
    path = tmp_path / "weights.pt"
    torch.save(state_dict, path)
    with pytest.raises(UserError) as err:
        load_prediff_weights(build(), path, kind)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_weight_files_get_one_line_errors(fixtures, tmp_path):
    vae_sd, unet_sd = fixtures["vae"]["state_dict"], fixtures["unet"]["state_dict"]
    denoiser = lambda: small_denoiser(fixtures["unet"])  # noqa: E731
    # another module's file: what it is, and the first keys that do not fit
    _one_line_error(denoiser, "denoiser", vae_sd, tmp_path, "missing: proj_in.", "unexpected: encoder.conv_in.weight",
                    "it is a PreDiff VAE (AutoencoderKL) with channels [32, 64, 96, 96]")
    _one_line_error(denoiser, "denoiser", fixtures["align"]["state_dict"], tmp_path, "shape mismatch",
                    "it is a PreDiff alignment network")
    earthformer = torch.load(FIXTURES / "earthformer_sevirlr.pt", weights_only=True)["state_dict"]
    _one_line_error(denoiser, "denoiser", earthformer, tmp_path, "Earthformer", "not a PreDiff module")
    # a key missing, an unexpected key, a shape that does not fit
    _one_line_error(denoiser, "denoiser", {k: v for k, v in unet_sd.items() if k != "final_proj.bias"}, tmp_path,
                    "missing: proj_out.bias")
    _one_line_error(denoiser, "denoiser", unet_sd | {"extra.weight": torch.zeros(1)}, tmp_path,
                    "unexpected: extra.weight")
    wide = lambda: build_denoiser(published("ldm", "denoiser", base_units=64), 64, 7, 6, (16, 16))  # noqa: E731
    _one_line_error(wide, "denoiser", unet_sd, tmp_path, "shape mismatch: first_proj.", "(32, 65, 3, 3, 3) vs (64,",
                    "base_units 32")
    _one_line_error(lambda: small_vae(fixtures["vae"]), "vae", [torch.zeros(1)], tmp_path, "holds list")
    with pytest.raises(UserError, match="unknown PreDiff module 'unet'; use one of vae, denoiser, align"):
        convert_prediff("unet", unet_sd, denoiser())
