"""Datasets: real-format readers and synthetic twins, built by registry name from `cfg.dataset`.

    build_datamodule(cfg.dataset)             the LightningDataModule (a missing synthetic twin is generated)
    synthesize(cfg.dataset) / check(...)      `earthcast data synth` / `earthcast data check`
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from earthcast.config import plain
from earthcast.data import enso, gridded, sevir  # noqa: F401 - register readers, twins and checkers
from earthcast.data.base import CHECKERS, DATASETS, SYNTHESIZERS, TWIN_RECORD, ForecastDataModule
from earthcast.errors import UserError
from earthcast.rundir import global_rank

log = logging.getLogger("earthcast")


def synthesize(cfg_dataset, force: bool = False, progress: bool = True) -> Path:
    """Write the synthetic twin described by cfg_dataset.synth at cfg_dataset.root. An existing twin made with the
    same settings is kept; one made with others is refused in one line (force=True generates it again)."""
    cfg = plain(cfg_dataset)
    synth = cfg.get("synth")  # only the *_synth datasets have one
    if not synth:
        raise UserError(f"dataset={cfg['name']} has no synthetic twin; pick one of the *_synth datasets "
                        f"(e.g. dataset=sevir_synth, dataset=enso_synth)")
    root = Path(cfg["root"])
    if root.exists():
        if not force:
            check_twin(cfg)
            return root
        shutil.rmtree(root)
    try:
        return Path(SYNTHESIZERS.get(str(synth["generator"]))(cfg, progress=progress))
    except (OSError, UserError):
        if force or not root.exists():
            raise
        # another job (a parallel multirun, a second shell) published the same seeded twin first
        print(f"earthcast: another process generated {root} meanwhile; using it")
        check_twin(cfg)
        return root


def check_twin(cfg: dict) -> None:
    """An existing twin's recorded settings against the configured ones: a one-line UserError when they differ
    (the files would not be what the run records), a warning when the twin predates the record."""
    root = Path(cfg["root"])
    record = root / TWIN_RECORD
    if not record.is_file():
        log.warning("%s holds no record of the settings it was generated with (made by an older earthcast); "
                    "if dataset.synth.* changed since, regenerate it with `earthcast data synth force=true`", root)
        return
    try:
        made = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{record} is unreadable; regenerate the twin with `earthcast data synth force=true`") from None
    asked = {key: cfg.get(key) for key in made}
    differ = [f"dataset.{key}: {was!r} there, {now!r} asked" for key, (was, now) in _flat_pairs(made, asked)
              if was != now]
    if differ:
        raise UserError(f"the synthetic twin at {root} was generated with other settings ({'; '.join(differ[:3])}"
                        f"{' …' if len(differ) > 3 else ''}); regenerate it with `earthcast data synth force=true` "
                        f"and the same overrides, or give these settings their own dataset.root")


def _flat_pairs(made: dict, asked: dict, prefix: str = ""):
    for key in sorted(set(made) | set(asked or {})):
        was, now = made.get(key), (asked or {}).get(key)
        if isinstance(was, dict) and isinstance(now, dict):
            yield from _flat_pairs(was, now, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", (was, now)


def ensure_dataset(cfg_dataset, wait_s: float = 3600.0) -> None:
    """Generate a missing synthetic twin on first use (and check an existing one's settings). Only global rank 0
    writes (atomically, by rename); other ranks wait for the root to appear, so simultaneous SLURM tasks never
    race."""
    cfg = plain(cfg_dataset)
    if not cfg.get("synth"):
        return
    root = Path(cfg["root"])
    if root.exists():
        check_twin(cfg)
        return
    if global_rank() == 0:
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
    """The LightningDataModule for cfg_dataset.name, or the ForecastDataModule subclass cfg_dataset._target_
    names (a synthetic twin is generated first if needed); with `split`, its test and predict loaders serve
    that split."""
    cfg = plain(cfg_dataset)
    ensure_dataset(cfg)
    return DATASETS.build_from(cfg)(cfg, split)


def check(cfg_dataset) -> dict:
    """Validate the root cfg_dataset names: a report whose problems are listed, never raised."""
    cfg = plain(cfg_dataset)
    if str(cfg["name"]) not in CHECKERS:
        raise UserError(f"no checker for dataset={cfg['name']}")
    return CHECKERS.get(str(cfg["name"]))(cfg)


__all__ = ["DATASETS", "SYNTHESIZERS", "build_datamodule", "check", "ensure_dataset", "synthesize"]
