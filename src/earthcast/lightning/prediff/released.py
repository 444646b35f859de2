"""The authors' released PreDiff files (github.com/gaozhihan/PreDiff) as earthcast stage modules.

The authors released one file per network: the VAE, the latent denoiser and the alignment network. A stage
module holds its parents (an LDM its VAE; an alignment stage its VAE and its LDM's denoiser), so the stage of
a chain of run configs — the VAE stage's, the LDM stage's, the alignment stage's, as far as the stage goes —
is built with its parents' part of the config filled in as training the chain would have stored it, and
each network takes its file's weights through the converter (earthcast.models.prediff.convert: every key and
shape checked, one-line errors). The denoiser samples with the file's moving average when it holds one. The
released VAE carries no latent scale: the chain uses its latents as they are (the published setting). The
alignment stage's F₀ regression is fitted on data afterwards (PreDiffAlignModule.fit_anticipation).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from earthcast.errors import UserError
from earthcast.lightning.module import EarthcastModule
from earthcast.lightning.prediff.align import PreDiffAlignModule
from earthcast.lightning.prediff.ldm import PreDiffLDMModule
from earthcast.lightning.prediff.vae import PreDiffVAEModule
from earthcast.models.prediff.convert import convert_prediff

#: the stage modules of a chain, and the released files each stage is made of
STAGES = ("prediff_vae", "prediff_ldm", "prediff_align")
FILES = {"prediff_vae": ("vae",), "prediff_ldm": ("vae", "denoiser"), "prediff_align": ("vae", "denoiser", "align")}


class ReleasedFiles:
    """The released state_dicts by kind ('vae', 'denoiser', 'align'), each with the path it came from, loaded
    into earthcast networks; `names` says which configured model a kind's network belongs to (for errors)."""

    def __init__(self, state_dicts: Mapping[str, Mapping[str, torch.Tensor]], sources: Mapping[str, str],
                 names: Mapping[str, str]):
        self.state_dicts, self.sources, self.names = state_dicts, sources, names

    def load(self, network: nn.Module, kind: str, ema: bool = True) -> None:
        converted = convert_prediff(kind, self.state_dicts[kind], network, source=self.sources[kind],
                                    target=f"model={self.names[kind]}", ema=ema)
        network.load_state_dict(converted, strict=True)


def released_stage(chain: list[dict], files: ReleasedFiles) -> EarthcastModule:
    """The stage module of the last run config in `chain` (plain run configs of prediff_vae[, prediff_ldm[,
    prediff_align]]), its networks holding the released weights."""
    if [config["module"] for config in chain] != list(STAGES[:len(chain)]):
        raise ValueError(f"a chain is the run configs of {', '.join(STAGES)} in order, not "
                         f"{[config['module'] for config in chain]}")
    vae = chain[0]["model"]["autoencoder"]
    if len(chain) == 1:
        module = PreDiffVAEModule(chain[0])
        files.load(module.autoencoder, "vae")
        return module
    ldm_config = copy.deepcopy(chain[1])
    ldm = ldm_config["model"]
    if ldm["unit_variance_latents"]:
        raise UserError("the released VAE carries no latent scale; convert with the published "
                        "model.unit_variance_latents=false (latents as the VAE gives them)")
    ldm.update(vae=vae, latent_scale=1.0)
    if len(chain) == 2:
        module = PreDiffLDMModule(ldm_config)
        files.load(module.vae, "vae")
        files.load(module.denoiser, "denoiser", ema=False)
        files.load(module.denoiser_ema, "denoiser", ema=True)
        return module
    align_config = copy.deepcopy(chain[2])
    align_config["model"]["ldm"] = {key: ldm[key] for key in ("vae", "latent_scale", "denoiser", "diffusion")}
    module = PreDiffAlignModule(align_config)
    files.load(module.vae, "vae")
    files.load(module.denoiser, "denoiser", ema=True)  # the weights the LDM samples with
    files.load(module.align_net, "align")
    return module
