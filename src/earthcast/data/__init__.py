"""Datasets: real-format readers and synthetic twins, built by registry name from `cfg.dataset`."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

from earthcast.data.base import DATASETS, SYNTHESIZERS
from earthcast.errors import UserError

# Modules that register readers and generators on import.
_DATA_MODULES = ["sevir", "sevir_synth", "enso", "enso_synth"]


def _import_datasets() -> None:
    for name in _DATA_MODULES:
        importlib.import_module(f"earthcast.data.{name}")


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def synthesize(cfg_dataset, force: bool = False, progress: bool = True) -> Path:
    """Write the synthetic twin described by cfg_dataset.synth at cfg_dataset.root."""
    _import_datasets()
    synth = cfg_dataset.get("synth")
    if not synth:
        raise UserError(f"dataset={cfg_dataset['name']} has no synthetic twin; pick one of the *_synth datasets "
                        f"(e.g. dataset=sevir_synth, dataset=enso_synth)")
    root = Path(cfg_dataset["root"])
    if root.exists():
        if not force:
            return root
        import shutil

        shutil.rmtree(root)
    try:
        return Path(SYNTHESIZERS.get(str(synth["generator"]))(cfg_dataset, progress=progress))
    except (OSError, UserError):
        if force or not root.exists():
            raise
        # another job (a parallel multirun, a second shell) published the same seeded twin first
        print(f"earthcast: another process generated {root} meanwhile; using it")
        return root


def ensure_dataset(cfg_dataset, wait_s: float = 3600.0) -> None:
    """Generate a missing synthetic twin on first use. Only global rank 0 writes (atomically, by rename);
    other ranks wait for the root to appear, so simultaneous SLURM tasks never race."""
    root = Path(cfg_dataset["root"])
    if root.exists() or not cfg_dataset.get("synth"):
        return
    if _global_rank() == 0:
        print(f"earthcast: synthetic dataset not found at {root}; generating it (once)")
        synthesize(cfg_dataset)
        return
    deadline = time.monotonic() + wait_s
    while not root.exists():
        if time.monotonic() > deadline:
            raise UserError(f"timed out waiting for rank 0 to generate {root}; run `earthcast data synth` first")
        time.sleep(2.0)


def build_datamodule(cfg_dataset):
    """The LightningDataModule for cfg_dataset.name (generating a synthetic twin first if needed)."""
    _import_datasets()
    ensure_dataset(cfg_dataset)
    return DATASETS.get(str(cfg_dataset["name"]))(cfg_dataset)


__all__ = ["DATASETS", "SYNTHESIZERS", "build_datamodule", "ensure_dataset", "synthesize"]
