"""Tiny PreDiff run configs for unit tests: 8×8 frames, 3 → 2 frames, 4×4×2 latents, 100 diffusion steps.

Each builder returns the plain run config a Lightning task is constructed from (what a checkpoint stores), so
the tests exercise the same config handling as `earthcast train` without composing Hydra.
"""

from __future__ import annotations

import copy

import torch

DATASET = {"name": "sevirlr", "in_len": 3, "out_len": 2, "height": 8, "width": 8, "channels": 1}
VAE = {"in_channels": 1, "channels": [8, 8], "blocks_per_level": 1, "latent_channels": 2, "norm_groups": 4,
       "dropout": 0.0, "mid_attention": True}
NETWORK = {"base_units": 8, "depth": [1, 1], "num_heads": 2, "norm_groups": 4, "attn_drop": 0.0,
           "proj_drop": 0.0, "ffn_drop": 0.0}
DIFFUSION = {"beta_schedule": "scaled_linear", "num_timesteps": 100, "beta_start": 1e-4, "beta_end": 2e-2,
             "prediction_type": "eps"}
EVALUATOR = {"name": "sevir", "thresholds": [16, 74], "pool_sizes": [4], "fss_thresholds": [],
             "reference": False}
OPTIM = {"lr": 1e-3, "weight_decay": 0.0}


def vae_config() -> dict:
    return copy.deepcopy({"module": "prediff_vae", "dataset": DATASET, "evaluator": EVALUATOR, "optim": OPTIM,
                          "model": {"name": "prediff_vae", "autoencoder": VAE, "kl_weight": 1e-6}})


def ldm_config(prediction_type: str = "eps") -> dict:
    """An LDM config whose parent VAE is inline (what `load_parents=False` rebuilds from)."""
    diffusion = {**DIFFUSION, "prediction_type": prediction_type}
    model = {"name": "prediff_ldm", "vae": VAE, "latent_scale": 1.0, "denoiser": NETWORK, "diffusion": diffusion,
             "ema": {"enabled": True, "decay": 0.9},
             "sampling": {"members": 2, "sampler": {"name": "ddim", "steps": 3}}}
    return copy.deepcopy({"module": "prediff_ldm", "dataset": DATASET, "evaluator": EVALUATOR, "optim": OPTIM,
                          "model": model})


def align_config() -> dict:
    ldm = {"vae": VAE, "latent_scale": 1.0, "denoiser": NETWORK, "diffusion": DIFFUSION}
    model = {"name": "prediff_align", "ldm": ldm, "constraint": {"name": "avg_intensity"}, "network": NETWORK,
             "anticipation": {"ridge": 1e-6}}
    return copy.deepcopy({"module": "prediff_align", "dataset": DATASET, "evaluator": EVALUATOR, "optim": OPTIM,
                          "model": model})


def batch(n: int = 2, seed: int = 0) -> dict:
    """A batch of smooth blobs on the dataset scale [0, 1], brighter in some samples than others."""
    g = torch.Generator().manual_seed(seed)
    length = DATASET["in_len"] + DATASET["out_len"]
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centre = torch.rand(n, 1, 2, generator=g) * 4 + 2
    drift = torch.linspace(0, 1, length).reshape(1, length, 1)
    cy, cx = (centre[..., 0] + drift[..., 0]), (centre[..., 1] + drift[..., 0])
    peak = 0.3 + 0.6 * torch.rand(n, 1, generator=g)
    frames = peak[..., None, None] * torch.exp(-((yy - cy[..., None, None]) ** 2 + (xx - cx[..., None, None]) ** 2)
                                              / 6.0)
    frames = frames.unsqueeze(-1)  # B×T×H×W×1
    return {"inputs": frames[:, : DATASET["in_len"]], "targets": frames[:, DATASET["in_len"]:]}
