"""Published Earthformer weights → earthcast's module names.

The authors' released files (`earthformer_sevir.pt`, `earthformer_icarenso2021.pt`, linked from the README of
github.com/amazon-science/earth-forecasting-transformer) are plain `state_dict`s of their
`CuboidTransformerModel`; their training code saves Lightning checkpoints whose `state_dict` holds the same
keys under a module prefix. `reference_to_earthcast` renames every key by the explicit table below and checks
the result against an `Earthformer` built from the matching earthcast config, key by key and shape by shape.
The relative-position *index* buffers of the reference are not weights (earthcast derives them from the
cuboid geometry), so they are checked for size and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from earthcast.models import weights

# (reference pattern, earthcast replacement), applied in order to every key; the first rules fix the module
# path, the later ones the names inside attention blocks (shared with PreDiff, whose reference reuses them).
MODULE_KEY_MAP: list[tuple[str, str]] = [
    # convolutional stem ('stack_conv': lists of stages; 'conv': one stage)
    (r"^initial_encoder\.conv_block_list\.(\d+)\.", r"stem.convs.\1."),
    (r"^initial_encoder\.conv_block\.", "stem.convs.0."),
    (r"^initial_encoder\.patch_merge_list\.(\d+)\.", r"stem.merges.\1."),
    (r"^initial_encoder\.patch_merge\.", "stem.merges.0."),
    # upsampling head, its mirror, and the output projection
    (r"^final_decoder\.conv_block_list\.(\d+)\.", r"head.convs.\1."),
    (r"^final_decoder\.conv_block\.", "head.convs.0."),
    (r"^final_decoder\.upsample_list\.(\d+)\.", r"head.upsamples.\1."),
    (r"^final_decoder\.upsample\.", "head.upsamples.0."),
    (r"^dec_final_proj\.", "out_proj."),
    # position embeddings, global vectors, the decoder's initial query
    (r"^enc_pos_embed\.", "pos_embed."),
    (r"^dec_pos_embed\.", "query_pos_embed."),
    (r"^z_proj\.", "query_proj."),
    (r"^init_global_vectors$", "global_vectors"),
    # between levels
    (r"^encoder\.down_layers\.", "encoder.down."),
    (r"^encoder\.down_layer_global_proj\.", "encoder.global_down."),
    (r"^decoder\.upsample_layers\.", "decoder.upsample."),
    (r"^decoder\.hierarchical_pos_embed_l\.", "decoder.pos_embed."),
]
CUBOID_BLOCK_KEY_MAP: list[tuple[str, str]] = [
    # inside the cuboid attention blocks and their FFNs
    (r"\.global_ffn_l\.", ".global_ffn."),
    (r"\.ffn_l\.", ".ffn."),
    (r"\.attn_l\.", ".attn."),
    (r"\.ffn_1_gate\.", ".gate."),
    (r"\.ffn_1\.", ".fc1."),
    (r"\.ffn_2\.", ".fc2."),
    (r"\.layer_norm\.", ".norm."),
    (r"\.relative_position_bias_table$", ".relative_position_bias"),
    (r"\.global_vec_norm\.", ".global_norm."),
    (r"\.l2g_q_net\.", ".l2g_q."),
    (r"\.l2g_global_kv_net\.", ".l2g_global_kv."),
    (r"\.g2l_global_q_net\.", ".g2l_global_q."),
    (r"\.g2l_k_net\.", ".g2l_k."),
    (r"\.g2l_v_net\.", ".g2l_v."),
    (r"\.g2g_global_qkv_net\.", ".g2g_global_qkv."),
    # position embedding tables
    (r"\.T_embed\.", ".t."),
    (r"\.H_embed\.", ".h."),
    (r"\.W_embed\.", ".w."),
    (r"\.HW_embed\.", ".hw."),
]
KEY_MAP = MODULE_KEY_MAP + CUBOID_BLOCK_KEY_MAP
INDEX_BUFFER = re.compile(r"\.relative_position_index$")  # derived from the geometry here: not loaded
_CROSS_BLOCK = re.compile(r"^decoder\.cross_blocks\.(\d+)\.")


def rename(key: str, cross_start: int = 0) -> str:
    """The earthcast name of one reference key. The reference numbers cross-attention levels from
    `dec_cross_start`, earthcast from the finest level."""
    match = _CROSS_BLOCK.match(key)
    if match:
        key = f"decoder.cross_blocks.{int(match.group(1)) + cross_start}." + key[match.end():]
    for pattern, replacement in KEY_MAP:
        key = re.sub(pattern, replacement, key)
    return key


def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own keys from a Lightning checkpoint's state_dict (e.g. `torch_nn_module.encoder...`):
    the prefix is whatever precedes the encoder's first block; keys outside that module are left out."""
    return weights.strip_prefix(state_dict, r"encoder\.blocks\.0\.")


def reference_to_earthcast(state_dict: Mapping[str, torch.Tensor], cross_start: int = 0) -> dict[str, torch.Tensor]:
    """Rename a reference `CuboidTransformerModel` state_dict to earthcast's `Earthformer` (index buffers
    dropped). Pure renaming: the caller checks the result against the model it will be loaded into."""
    return {rename(k, cross_start): v for k, v in strip_prefix(state_dict).items() if not INDEX_BUFFER.search(k)}


# -- reading and checking a published file ------------------------------------------------------------------
# what each published configuration looks like in a state_dict: (frames in, frames out, global vectors)
PUBLISHED = {
    (13, 12, 8): "model=earthformer_sevir dataset=sevir",
    (7, 6, 0): "model=earthformer_sevirlr dataset=sevirlr",
    (12, 14, 0): "model=earthformer_enso dataset=enso",
}


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a published `.pt` or of a reference Lightning checkpoint (earthcast.models.weights)."""
    return weights.read_weights(path, "the reference Earthformer")


def describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    """What a reference state_dict is, from its tensor shapes: frames, width, token grid, global vectors, and
    which published configuration that matches."""
    sd = strip_prefix(state_dict)
    if "enc_pos_embed.T_embed.weight" not in sd or "dec_pos_embed.T_embed.weight" not in sd:
        return f"not an Earthformer state_dict (first keys: {', '.join(list(sd)[:3])})"
    t_in, base = sd["enc_pos_embed.T_embed.weight"].shape
    t_out = sd["dec_pos_embed.T_embed.weight"].shape[0]
    globals_ = sd["init_global_vectors"].shape[0] if "init_global_vectors" in sd else 0
    text = f"a {t_in}→{t_out}-frame Earthformer with base_units {base}"
    if "enc_pos_embed.H_embed.weight" in sd:
        text += f", {sd['enc_pos_embed.H_embed.weight'].shape[0]}×{sd['enc_pos_embed.W_embed.weight'].shape[0]} tokens"
    text += f", {globals_ or 'no'} global vectors"
    match = PUBLISHED.get((t_in, t_out, globals_))
    return text + (f" (the published {match})" if match else "")


def convert_for(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, target: str,
                cross_start: int = 0) -> dict[str, torch.Tensor]:
    """`state_dict` (reference names) renamed and checked against `model`: every key present, none extra,
    every shape equal. `target` names the configuration in errors (e.g. 'model=earthformer_enso')."""
    reference = strip_prefix(state_dict)
    renamed = {rename(k, cross_start): k for k in reference if not INDEX_BUFFER.search(k)}
    return weights.match_keys(model, reference, renamed, source=source, target=target,
                              description=describe(state_dict))
