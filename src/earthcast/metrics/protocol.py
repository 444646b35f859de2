"""What protocol produced a set of scores, and a fingerprint that changes when and only when it changes.

The protocol is everything that decides what a score means besides the forecast itself: dataset and split,
which samples were scored (their number and a hash of their ids), the scored shape (context frames, lead
frames, grid), the evaluator's settings (thresholds, pooling, value scale, …), the NaN policy and the
earthcast version that scored them. The fingerprint is a hash of exactly these. What was scored — the model,
its config hash and the checkpoint's sha256 — is recorded beside the protocol (`model_record`) and is not part
of it: two models scored the same way share a fingerprint.

The sample hash is order-free and additive, so it is computed in flat memory and summed across DDP ranks like
any other state: each sample id's sha256 is cut into HASH_LANES 16-bit numbers, and the lanes are summed
over samples. Equal multisets of ids give equal sums; the chance that two different test sets collide is
negligible for test sets of any practical size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from earthcast import __version__

HASH_LANES = 8
#: recorded with the protocol but not hashed: describe a run, not its scoring
NOT_HASHED = ("fingerprint",)


def sample_hash_lanes(ids: Iterable[str]) -> torch.Tensor:
    """HASH_LANES int64 sums of the 16-bit pieces of each id's sha256 (see the module docstring)."""
    lanes = torch.zeros(HASH_LANES, dtype=torch.int64)
    for sample_id in ids:
        digest = hashlib.sha256(str(sample_id).encode()).digest()[: 2 * HASH_LANES]
        lanes += torch.tensor([int.from_bytes(digest[2 * i: 2 * i + 2], "little") for i in range(HASH_LANES)],
                              dtype=torch.int64)
    return lanes


def samples_digest(lanes: torch.Tensor, n_samples: int) -> str:
    """Short hex digest of the summed lanes and the sample count."""
    text = ",".join(str(int(value)) for value in lanes.tolist()) + f";{int(n_samples)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(protocol: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of the protocol's canonical JSON (keys sorted, floats as JSON writes them)."""
    hashed = {key: value for key, value in protocol.items() if key not in NOT_HASHED}
    text = json.dumps(hashed, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_protocol(scored: Mapping[str, Any], *, dataset: str, split: str, nan_policy: str,
                 synthetic: bool = False) -> dict[str, Any]:
    """The protocol of a run: `scored` (what the evaluator saw and its settings, `protocol_facts()`) plus the
    run's dataset (and whether it is a synthetic twin), split and NaN policy and this earthcast version, with
    its fingerprint first."""
    protocol = {"dataset": str(dataset), "synthetic": bool(synthetic), "split": str(split), **scored,
                "nan_policy": str(nan_policy), "earthcast_version": __version__}
    return {"fingerprint": fingerprint(protocol), **protocol}


def differences(ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None) -> list[str]:
    """'key: ours ≠ theirs' for every protocol entry that differs (an empty list when they agree)."""
    if not ours or not theirs:
        return ["protocol: not recorded"] if ours != theirs else []
    found = []
    for key in [*ours, *(k for k in theirs if k not in ours)]:
        if key in NOT_HASHED:
            continue
        if ours.get(key) != theirs.get(key):
            found.append(f"{key}: {_short(ours.get(key))} ≠ {_short(theirs.get(key))}")
    return found


def _short(value: Any) -> str:
    text = "—" if value is None else json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------------------------ models
def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_sha256(config: Any) -> str:
    """sha256 of a (plain) config's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def model_record(name: str, config: Any, checkpoint: str | Path | None) -> dict[str, Any]:
    """What was scored: the model's name, its config's sha256 and the checkpoint file's (when there is one)."""
    record: dict[str, Any] = {"name": str(name), "config_sha256": config_sha256(config)}
    if checkpoint and Path(str(checkpoint)).is_file():
        record["checkpoint"] = str(checkpoint)
        record["checkpoint_sha256"] = file_sha256(checkpoint)
    return record
