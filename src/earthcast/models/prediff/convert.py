"""Published PreDiff weights → earthcast's PreDiff modules (Gao et al., NeurIPS 2023; github.com/gaozhihan/PreDiff).

The authors released three files, one per stage, linked from their README: the VAE (`AutoencoderKL`), the
latent denoiser (`CuboidTransformerUNet`) and the average-intensity alignment network
(`NoisyCuboidTransformerEncoder`). Each is a plain state_dict of its module; their training code saves
Lightning checkpoints whose state_dict holds the same keys under a module prefix (`torch_nn_module.`; the
VAE inside a latent-diffusion checkpoint under `first_stage_model.`). A latent-diffusion checkpoint also holds
the denoiser's exponential moving average (`model_ema.<name without dots>`), which the reference samples
with: the denoiser is converted from it unless `ema=False`.

`convert_prediff(kind, state_dict, model)` renames every key by the explicit tables below and checks the
result against the earthcast module it will be loaded into, key by key and shape by shape; anything that
does not fit is one UserError line naming the file, the first offending keys and what the file looks like.
The relative-position *index* buffers are not weights (earthcast derives them from the geometry): dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from earthcast.errors import UserError
from earthcast.models import weights
from earthcast.models.earthformer.convert import CUBOID_BLOCK_KEY_MAP, INDEX_BUFFER
from earthcast.models.earthformer.convert import describe as describe_earthformer

# (reference pattern, earthcast replacement), applied in order to every key.
VAE_KEY_MAP: list[tuple[str, str]] = [
    # levels: residual blocks, then the stride-2 (encoder) or upsampling (decoder) convolution
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.levels.\1.blocks."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.levels.\1.down."),
    (r"^decoder\.up_blocks\.(\d+)\.resnets\.", r"decoder.levels.\1.blocks."),
    (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.", r"decoder.levels.\1.up."),
    # mid block: residual, attention, residual
    (r"\.mid_block\.resnets\.0\.", ".mid.res1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.res2."),
    (r"\.mid_block\.attentions\.0\.group_norm\.", ".mid.attn.norm."),
    (r"\.mid_block\.attentions\.0\.proj_attn\.", ".mid.attn.proj."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn."),
    # inside residual blocks, the output norm, the 1×1 convs around the latent
    (r"\.conv_shortcut\.", ".skip."),
    (r"\.conv_norm_out\.", ".norm_out."),
    (r"^quant_conv\.", "to_moments."),
    (r"^post_quant_conv\.", "from_latent."),
]
# the denoiser and the alignment network share their input, levels and timestep embedding
NETWORK_KEY_MAP: list[tuple[str, str]] = [
    (r"^first_proj\.", "proj_in."),
    (r"^time_embed\.layer\.", "time_embed.mlp."),
    (r"^downsample_layers\.", "merge."),
    (r"^upsample_layers\.", "upsample."),
    # one time-embedded residual block per level, applied before each of the level's attention blocks
    (r"^(down|up)_time_embed_blocks\.(\d+)\.", r"\1.\2.res."),
    (r"^(down|up)_self_blocks\.(\d+)\.(\d+)\.", r"\1.\2.blocks.\3."),
    # denoiser output; alignment readout (GroupNorm, SiLU, attention pooling)
    (r"^final_proj\.", "proj_out."),
    (r"^out\.0\.", "readout_norm."),
    (r"^out\.2\.positional_embedding$", "readout.position"),
    (r"^out\.2\.qkv_proj\.", "readout.qkv."),
    (r"^out\.2\.c_proj\.", "readout.proj."),
    # inside the 3-D residual blocks (the LDM ResBlock's Sequential indices)
    (r"\.in_layers\.0\.", ".norm1."),
    (r"\.in_layers\.2\.", ".conv1."),
    (r"\.emb_layers\.1\.", ".embed."),
    (r"\.out_layers\.0\.", ".norm2."),
    (r"\.out_layers\.3\.", ".conv2."),
    (r"\.skip_connection\.", ".skip."),
    *CUBOID_BLOCK_KEY_MAP,  # inside the cuboid attention blocks, and the position embedding tables
]
KINDS = {  # kind → (what it is, key map, a key that anchors its module prefix in a Lightning checkpoint)
    "vae": ("VAE (AutoencoderKL)", VAE_KEY_MAP, r"encoder\.conv_in\.weight$"),
    "denoiser": ("denoiser (CuboidTransformerUNet)", NETWORK_KEY_MAP, r"final_proj\.weight$"),
    "align": ("alignment network (NoisyCuboidTransformerEncoder)", NETWORK_KEY_MAP, r"out\.2\.positional_embedding$"),
}
# what the published SEVIR-LR files look like (see `describe`)
PUBLISHED = {
    "vae": "channels [128, 256, 512, 512], 64 latent channels",
    "denoiser": "base_units 256, 13 frames of 16×16×64 latents",
    "align": "base_units 128, 6 frames of 16×16×64 latents",
}


def _kind(kind: str) -> tuple[str, list[tuple[str, str]], str]:
    if kind not in KINDS:
        raise UserError(f"unknown PreDiff module {kind!r}; use one of {', '.join(KINDS)}")
    return KINDS[kind]


def rename(key: str, kind: str) -> str:
    """The earthcast name of one reference key of a `kind` module ('vae', 'denoiser' or 'align')."""
    for pattern, replacement in _kind(kind)[1]:
        key = re.sub(pattern, replacement, key)
    return key


def strip_prefix(state_dict: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """The `kind` module's own keys, from a plain state_dict or a reference Lightning checkpoint's."""
    return weights.strip_prefix(state_dict, _kind(kind)[2])


EMA_PREFIX = "model_ema."  # the reference's LitEma: one buffer per parameter, its name without dots


def with_ema(state_dict: Mapping[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`reference` (the denoiser's keys) with each parameter replaced by its moving average when the
    checkpoint `state_dict` holds one (a reference latent-diffusion checkpoint); buffers have none."""
    if EMA_PREFIX + "num_updates" not in state_dict:
        return reference
    return {k: state_dict.get(EMA_PREFIX + k.replace(".", ""), v) for k, v in reference.items()}


def architecture(state_dict: Mapping[str, torch.Tensor], kind: str) -> dict | None:
    """The sizes a reference `kind` module was built with, read from its tensors (a plain state_dict or a
    Lightning checkpoint's): vae → channels, latent_channels; denoiser and align → base_units, frames,
    latent_hw, latent_channels. None when the state_dict is not such a module."""
    sd = strip_prefix(state_dict, kind)
    if kind == "vae" and "encoder.conv_in.weight" in sd and "quant_conv.weight" in sd:
        levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down_blocks.")})
        return {"channels": [int(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in levels],
                "latent_channels": int(sd["quant_conv.weight"].shape[0]) // 2}
    frames_key = "pos_embed.T_embed.weight"
    if kind in ("denoiser", "align") and frames_key in sd and "first_proj.in_layers.2.weight" in sd:
        if (kind == "denoiser") != ("final_proj.weight" in sd):
            return None
        frames, base = sd[frames_key].shape
        height, width = (int(sd[f"pos_embed.{a}_embed.weight"].shape[0]) for a in "HW")
        channels = sd["first_proj.in_layers.2.weight"].shape[1] - (kind == "denoiser")  # − indicator channel
        return {"base_units": int(base), "frames": int(frames), "latent_hw": (height, width),
                "latent_channels": int(channels)}
    return None


def _summary(sd: Mapping[str, torch.Tensor], kind: str) -> str | None:
    """Shapes that tell a `kind` state_dict apart; None when it is not one."""
    sizes = architecture(sd, kind)
    if sizes is None:
        return None
    if kind == "vae":
        return f"channels {sizes['channels']}, {sizes['latent_channels']} latent channels"
    height, width = sizes["latent_hw"]
    return (f"base_units {sizes['base_units']}, {sizes['frames']} frames of {height}×{width}×"
            f"{sizes['latent_channels']} latents")


def describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    """What a reference state_dict holds, from its key names and tensor shapes, and whether that is one of
    the published SEVIR-LR files."""
    found = []
    for kind, (name, _, _) in KINDS.items():
        summary = _summary(state_dict, kind)
        if summary is not None:
            published = " (the published SEVIR-LR file's shape)" if summary == PUBLISHED[kind] else ""
            found.append(f"a PreDiff {name} with {summary}{published}")
    if found:
        return " and ".join(found)
    earthformer = describe_earthformer(state_dict)
    if not earthformer.startswith("not an"):
        return earthformer + ", not a PreDiff module"
    return f"not a PreDiff state_dict (first keys: {', '.join(list(state_dict)[:3])})"


def convert_prediff(kind: str, state_dict: Mapping[str, torch.Tensor], model: nn.Module, *,
                    source: str = "the state_dict", target: str | None = None,
                    ema: bool = True) -> dict[str, torch.Tensor]:
    """A reference `kind` state_dict ('vae', 'denoiser' or 'align'; plain or a Lightning checkpoint's) renamed
    to `model`'s keys and checked against it: every key present, none extra, every shape equal. The result
    loads with `model.load_state_dict(..., strict=True)`. `source` names the file and `target` the module or
    configuration in errors; `ema` takes a latent-diffusion checkpoint's averaged denoiser weights."""
    name = _kind(kind)[0]
    reference = strip_prefix(state_dict, kind)
    if kind == "denoiser" and ema:
        reference = with_ema(state_dict, reference)
    renamed = {rename(k, kind): k for k in reference if not INDEX_BUFFER.search(k)}
    target = target or f"earthcast's PreDiff {name.split(' (')[0]} ({type(model).__name__})"
    return weights.match_keys(model, reference, renamed, source=source, target=target,
                              description=describe(state_dict))


def load_prediff_weights(model: nn.Module, path: str | Path, kind: str, ema: bool = True) -> nn.Module:
    """Read a published PreDiff file (or reference Lightning checkpoint) into `model`, in place."""
    state_dict = weights.read_weights(path, f"the reference PreDiff {_kind(kind)[0]}")
    model.load_state_dict(convert_prediff(kind, state_dict, model, source=str(path), ema=ema), strict=True)
    return model
