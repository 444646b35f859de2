"""Datasets: real-format readers and synthetic twins, built by registry name from `cfg.dataset`.

    build_datamodule(cfg.dataset)             the LightningDataModule (a missing synthetic twin is generated)
    synthesize(cfg.dataset) / check(...)      `earthcast data synth` / `earthcast data check`
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from earthcast.config import plain
from earthcast.data import enso, sevir  # noqa: F401 - register readers, twins and checkers
from earthcast.data.base import CHECKERS, DATASETS, SYNTHESIZERS, ForecastDataModule
from earthcast.errors import UserError


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def synthesize(cfg_dataset, force: bool = False, progress: bool = True) -> Path:
    """Write the synthetic twin described by cfg_dataset.synth at cfg_dataset.root."""
    cfg = plain(cfg_dataset)
    synth = cfg.get("synth")  # only the *_synth datasets have one
    if not synth:
        raise UserError(f"dataset={cfg['name']} has no synthetic twin; pick one of the *_synth datasets "
                        f"(e.g. dataset=sevir_synth, dataset=enso_synth)")
    root = Path(cfg["root"])
    if root.exists():
        if not force:
            return root
        shutil.rmtree(root)
    try:
        return Path(SYNTHESIZERS.get(str(synth["generator"]))(cfg, progress=progress))
    except (OSError, UserError):
        if force or not root.exists():
            raise
        # another job (a parallel multirun, a second shell) published the same seeded twin first
        print(f"earthcast: another process generated {root} meanwhile; using it")
        return root


def ensure_dataset(cfg_dataset, wait_s: float = 3600.0) -> None:
    """Generate a missing synthetic twin on first use. Only global rank 0 writes (atomically, by rename);
    other ranks wait for the root to appear, so simultaneous SLURM tasks never race."""
    cfg = plain(cfg_dataset)
    root = Path(cfg["root"])
    if root.exists() or not cfg.get("synth"):
        return
    if _global_rank() == 0:
        print(f"earthcast: synthetic dataset not found at {root}; generating it (once)")
        started = time.monotonic()
        synthesize(cfg)
        print(f"earthcast: generated {root} in {time.monotonic() - started:.0f} s")
        return
    deadline = time.monotonic() + wait_s
    while not root.exists():
        if time.monotonic() > deadline:
            raise UserError(f"timed out waiting for rank 0 to generate {root}; run `earthcast data synth` first")
        time.sleep(2.0)


def build_datamodule(cfg_dataset, split: str | None = None) -> ForecastDataModule:
    """The LightningDataModule for cfg_dataset.name (generating a synthetic twin first if needed); with
    `split`, its test and predict loaders serve that split."""
    cfg = plain(cfg_dataset)
    ensure_dataset(cfg)
    return DATASETS.get(str(cfg["name"]))(cfg, split)


def check(cfg_dataset) -> dict:
    """Validate the root cfg_dataset names: a report whose problems are listed, never raised."""
    cfg = plain(cfg_dataset)
    if str(cfg["name"]) not in CHECKERS:
        raise UserError(f"no checker for dataset={cfg['name']}")
    return CHECKERS.get(str(cfg["name"]))(cfg)


__all__ = ["DATASETS", "SYNTHESIZERS", "build_datamodule", "check", "ensure_dataset", "synthesize"]
