"""`earthcast convert` for the released PreDiff files: the reference fixtures (the authors' three networks at
reduced width, same key names as the released files) → one alignment checkpoint holding its LDM and VAE →
`earthcast sample` on files in the real SEVIR-LR layout at the real 128×128 size; bad files get one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import xarray as xr

from earthcast.commands.convert import files_to_convert
from earthcast.errors import UserError
from tests.conftest import ONE_THREAD, assert_one_line_error, earthcast

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "reference_fixtures"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"reference fixtures not found at {FIXTURES} (they sit beside the checkout in CI, not on user machines)")
KINDS = {"vae": "vae", "denoiser": "unet", "align": "align"}  # convert's key → fixture name


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict[str, Path]:
    """The fixtures' state_dicts saved as plain files, as the authors released theirs."""
    folder = tmp_path_factory.mktemp("released")
    files = {}
    for kind, name in KINDS.items():
        files[kind] = folder / f"{name}.pt"
        torch.save(torch.load(FIXTURES / f"prediff_{name}_small.pt", weights_only=True)["state_dict"], files[kind])
    return files


def convert(cwd: Path, *args: str, check: bool = False):
    return earthcast("convert", *args, f"hydra.run.dir={cwd / 'run'}", cwd=cwd, check=check, env=ONE_THREAD)


@needs_fixtures
def test_released_files_convert_to_a_chain_that_samples(tmp_path, released):
    data = [f"paths.data_root={tmp_path / 'data'}", "dataset=sevirlr_synth", "dataset.synth.img_size=128",
            "dataset.synth.n_events=12", "dataset.num_workers=0"]
    ckpt = tmp_path / "prediff_align.ckpt"
    result = convert(tmp_path, "model=prediff_align_sevirlr", *(f"{k}={v}" for k, v in released.items()), *data,
                     f"dst={ckpt}", check=True)
    assert "base_units 32, 13 frames of 16×16×64 latents" in result.stdout and "F₀ regression fitted" in result.stdout
    stored = torch.load(ckpt, weights_only=True)
    assert stored["earthcast"]["overrides"][0] == "experiment=prediff_align_sevirlr"
    assert set(stored["earthcast"]["converted_from"]) == {"vae", "denoiser", "align"}
    config = stored["hyper_parameters"]["config"]
    model = config["model"]
    # the published stage at the files' widths, its parents inline as a trained chain stores them
    assert model["network"]["base_units"] == 32 and model["network"]["use_context"] is False
    assert model["ldm"]["vae"]["channels"] == [32, 64, 96, 96] and model["ldm"]["denoiser"]["base_units"] == 32
    assert model["ldm"]["latent_scale"] == 1.0 and config["trainer"]["precision"] == "32-true"
    fixture = torch.load(FIXTURES / "prediff_align_small.pt", weights_only=True)["state_dict"]
    assert torch.equal(stored["state_dict"]["align_net.readout.position"], fixture["out.2.positional_embedding"])
    assert bool(stored["state_dict"]["anticipation.fitted"])

    sample = tmp_path / "sample"
    earthcast("sample", f"ckpt_path={ckpt}", "members=2", "sampler.steps=2", "max_batches=1",
              "knowledge=avg_intensity", "knowledge.n_sigma=2", "figure_samples=0", "dataset.eval_batch_size=1",
              f"hydra.run.dir={sample}", cwd=tmp_path, env=ONE_THREAD)
    metrics = json.loads((sample / "metrics.json").read_text())
    assert metrics["crps"] is not None and metrics["knowledge/f0_mean_intensity"] is not None
    with xr.open_dataset(sample / "predictions.nc") as ds:
        assert ds["prediction"].shape == (1, 2, 6, 128, 128) and ds.attrs["knowledge"] == "guide"


@pytest.mark.parametrize("model, given, fragments", [
    ("prediff_align_sevirlr", ["vae", "denoiser"], ["missing align=", "vae=<.pt> denoiser=<.pt> align=<.pt>"]),
    ("prediff_ldm_sevirlr", ["vae", "denoiser", "align"], ["align= belongs to a later stage"]),
    ("prediff_vae_sevirlr", ["weights"], ["one per network: pass vae=<.pt> instead of weights="]),
    ("earthformer_sevirlr", ["vae"], ["vae= names a released PreDiff file"]),
    ("earthformer_sevirlr", [], ["pass weights=<.pt>"]),
    ("prediff_sevirlr", ["vae"], ["not a PreDiff stage"]),
])
def test_each_model_names_the_files_it_converts(model, given, fragments):
    with pytest.raises(UserError) as raised:
        files_to_convert(model, {key: f"{key}.pt" for key in given})
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert files_to_convert("prediff_ldm_sevirlr", {"vae": "v.pt", "denoiser": "d.pt"}) == {
        "vae": Path("v.pt"), "denoiser": Path("d.pt")}


@needs_fixtures
def test_bad_prediff_files_get_one_line(tmp_path, released):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(released["vae"].read_bytes()[:1000])
    cases = [
        (["model=prediff_align_sevirlr", f"vae={released['vae']}"], ["missing denoiser= align="]),
        (["model=prediff_vae_sevirlr", f"vae={truncated}"], ["truncated.pt", "cannot read", "truncated"]),
        # the denoiser's file where the VAE's belongs: what the file is, named in the error
        (["model=prediff_vae_sevirlr", f"vae={released['denoiser']}"],
         ["unet.pt does not fit model=prediff_vae_sevirlr", "missing:",
          "it is a PreDiff denoiser (CuboidTransformerUNet) with base_units 32"]),
    ]
    for args, fragments in cases:
        dst = tmp_path / "out" / "converted.ckpt"
        assert_one_line_error(convert(tmp_path, *args, f"dst={dst}"), *fragments)
        assert not dst.exists()
