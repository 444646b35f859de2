"""Published weight files → an earthcast module: the parts every converter shares.

`read_weights` loads a released `.pt` (a plain state_dict) or a reference Lightning checkpoint with
weights_only=True; `strip_prefix` takes the module's own keys out of a Lightning checkpoint; `match_keys`
checks renamed keys against the module that will load them, key by key and shape by shape. Every problem
is one UserError line naming the file, the first offending keys and what the file looks like.
Family-specific key maps live beside the models (models/earthformer/convert.py, models/prediff/convert.py).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from earthcast.errors import UserError


def read_weights(path: str | Path, what: str = "a reference model") -> dict[str, torch.Tensor]:
    """The tensors of a published `.pt` (a plain state_dict) or of a reference Lightning checkpoint, loaded
    with weights_only=True; one-line UserErrors for anything else. `what` names the expected content."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}; download the authors' file first (see docs/pretrained.md)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds pickled Python objects, not just tensors; weights_only loading refuses it "
                        f"(only plain state_dicts and Lightning checkpoints of the reference code convert)") from None
    except Exception as err:  # noqa: BLE001 - truncated zip, wrong format: the same fix for the user
        raise UserError(f"cannot read {path} ({type(err).__name__}): truncated or not a PyTorch file; "
                        f"download it again") from None
    if isinstance(loaded, Mapping) and "earthcast" in loaded:
        raise UserError(f"{path} is already an earthcast checkpoint; use it as ckpt_path=... or init_from=...")
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        kind = type(loaded).__name__ if not isinstance(loaded, Mapping) else "a dict that is not name → tensor"
        raise UserError(f"{path} holds {kind}, not a state_dict of {what}")
    return dict(loaded)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], anchor: str) -> dict[str, torch.Tensor]:
    """The module's own keys from a Lightning checkpoint's state_dict (e.g. `torch_nn_module.encoder...`).

    `anchor` is a regex for a key every such module has (matched at the start or after a '.'); the prefix is
    whatever precedes it in the first matching key, and keys outside that prefix are left out. Without a
    match the state_dict is returned as it is (the checks that follow report what is missing)."""
    pattern = re.compile(rf"(^|\.)(?={anchor})")
    for key in state_dict:
        match = pattern.search(key)
        if match:
            prefix = key[: match.end()]
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def _first(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) + (" …" if len(keys) > count else "")


def match_keys(model: nn.Module, reference: Mapping[str, torch.Tensor], renamed: Mapping[str, str], *,
               source: str, target: str, description: str) -> dict[str, torch.Tensor]:
    """`reference` loaded into `model`'s names: `renamed` maps each of our keys to its reference key. Every
    key of the model must be present, none extra, every shape equal; otherwise one UserError line naming
    `source`, `target`, the first offending keys and `description` (what the file looks like)."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in renamed]
    unexpected = [renamed[k] for k in renamed if k not in ours]
    wrong = [f"{renamed[k]} {tuple(reference[renamed[k]].shape)} vs {tuple(ours[k].shape)}"
             for k in ours if k in renamed and reference[renamed[k]].shape != ours[k].shape]
    problems = [f"{label}: {_first(keys)}"
                for label, keys in (("shape mismatch", wrong), ("missing", missing), ("unexpected", unexpected))
                if keys]
    if problems:
        raise UserError(f"{source} does not fit {target} ({'; '.join(problems)}); it is {description}")
    return {ours_key: reference[ref_key].to(ours[ours_key].dtype) for ours_key, ref_key in renamed.items()}
