"""Where the Hydra configs live, and the plain view of a composed config that the library code reads.

Configs are composed by Hydra from configs/ (one primary config per command, groups that mirror the
packages); library code takes plain dicts so it works the same on a composed config, a config stored in a
checkpoint, or a dict written in a test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from earthcast.errors import UserError
from earthcast.rundir import run_id


def register_resolvers() -> None:
    """`${earthcast.run_id:}` (the default run directory's last part, earthcast.rundir.run_id)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("earthcast.run_id"):
        OmegaConf.register_new_resolver("earthcast.run_id", run_id, use_cache=True)


register_resolvers()


def config_dir() -> Path:
    """configs/ of the source checkout, or EARTHCAST_CONFIG_DIR."""
    override = os.environ.get("EARTHCAST_CONFIG_DIR")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parents[2] / "configs", Path(__file__).resolve().parent / "configs"]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate
    raise UserError("cannot find earthcast's configs/ directory; set EARTHCAST_CONFIG_DIR=<repo>/configs")


def plain(cfg: Any) -> dict:
    """A composed config node (interpolations resolved) or any mapping, as a plain, mutable dict."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise UserError(f"expected a config mapping, got {type(cfg).__name__}")
    return dict(cfg)
