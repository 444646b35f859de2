"""The released PreDiff files as stage modules: each network takes its file, the denoiser samples with the file's
moving average, the parents' configs travel inline, and the released VAE's latents stay unscaled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.prediff import PreDiffLDMModule, PreDiffVAEModule
from earthcast.lightning.prediff.released import ReleasedFiles, released_stage
from tests.conftest import run_config

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "reference_fixtures"
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"reference fixtures not found at {FIXTURES} (they sit beside the checkout in CI, not on user machines)")]
# the published stages at the fixtures' widths
CHAIN = [["experiment=prediff_vae_sevirlr", "model.autoencoder.channels=[32,64,96,96]"],
         ["experiment=prediff_ldm_sevirlr", "model.denoiser.base_units=32"],
         ["experiment=prediff_align_sevirlr", "model.network.base_units=32"]]


@pytest.fixture(scope="module")
def files() -> ReleasedFiles:
    state_dicts = {kind: torch.load(FIXTURES / f"prediff_{name}_small.pt", weights_only=True)["state_dict"]
                   for kind, name in (("vae", "vae"), ("denoiser", "unet"), ("align", "align"))}
    # the denoiser as a reference latent-diffusion checkpoint: its weights under the module prefix, their
    # moving average beside them (LitEma: one buffer per parameter, the name without dots)
    raw = state_dicts["denoiser"]
    lightning = {f"torch_nn_module.{k}": v for k, v in raw.items()}
    lightning.update({f"model_ema.{k.replace('.', '')}": v + 1 for k, v in raw.items() if "relative_position_index"
                      not in k})
    lightning["model_ema.num_updates"] = torch.tensor(7)
    state_dicts["denoiser"] = lightning
    names = {"vae": "prediff_vae_sevirlr", "denoiser": "prediff_ldm_sevirlr", "align": "prediff_align_sevirlr"}
    return ReleasedFiles(state_dicts, {k: f"{k}.pt" for k in state_dicts}, names)


def chain(depth: int) -> list[dict]:
    return [run_config(overrides) for overrides in CHAIN[:depth]]


def test_ldm_stage_trains_from_the_weights_and_samples_with_their_average(files):
    module = released_stage(chain(2), files)
    assert isinstance(module, PreDiffLDMModule) and module.config["model"]["latent_scale"] == 1.0
    assert module.config["model"]["vae"]["channels"] == [32, 64, 96, 96]
    raw = files.state_dicts["denoiser"]["torch_nn_module.final_proj.weight"]
    assert torch.equal(module.denoiser.proj_out.weight, raw)
    assert torch.equal(module.denoiser_ema.proj_out.weight, raw + 1)
    assert module.sampling_denoiser is module.denoiser_ema


def test_alignment_stage_holds_the_averaged_denoiser_and_its_parents(files):
    module = released_stage(chain(3), files)
    raw = files.state_dicts["denoiser"]["torch_nn_module.final_proj.weight"]
    assert torch.equal(module.denoiser.proj_out.weight, raw + 1)
    assert torch.equal(module.align_net.readout.position, files.state_dicts["align"]["out.2.positional_embedding"])
    assert set(module.config["model"]["ldm"]) == {"vae", "latent_scale", "denoiser", "diffusion"}
    assert not bool(module.anticipation.fitted)  # fitted on data by the caller


def test_released_vae_has_no_latent_scale(files, tmp_path):
    configs = chain(2)
    configs[1]["model"]["unit_variance_latents"] = True
    with pytest.raises(UserError, match="no latent scale.*unit_variance_latents=false"):
        released_stage(configs, files)
    with pytest.raises(ValueError, match="in order"):
        released_stage(chain(3)[1:], files)
    # a converted VAE checkpoint as the parent of an LDM with unit-variance latents: refused for the same reason
    vae = released_stage(chain(1), files)
    assert isinstance(vae, PreDiffVAEModule)
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": {"config": vae.config},
                "earthcast": {"converted_from": {"vae": {"file": "vae.pt"}}}}, path)
    config = run_config(["experiment=prediff_ldm_sevirlr_ours", "model.denoiser.base_units=32",
                         f"model.vae_ckpt={path}"])
    with pytest.raises(UserError, match="without a measured latent scale"):
        PreDiffLDMModule.from_config(config)
