"""train a model (no arguments: the quickstart on the synthetic SEVIR twin), then test it

Fit on the train split, select the best checkpoint on the validation skill score (cfg.monitor), then score
that checkpoint on the test split. `ckpt_path=<run>/checkpoints/last.ckpt` resumes a run in its own run
directory, with the overrides it was composed with; `init_from=<ckpt>` starts from a trained or converted
checkpoint's weights with a fresh optimizer and schedule (fine-tuning).

A run directory that already holds checkpoints/last.ckpt of the same run (the same overrides: a requeued SLURM
job, or the same command with the same hydra.run.dir) is resumed from it without any flag; one of another run
is refused. Every split is read before the fit, so a problem in the test data shows before hours of
training. A signal saves last.ckpt at the next step and stops (earthcast.lightning.preemption).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from earthcast.commands import is_override, override_key, value_of
from earthcast.data import build_datamodule
from earthcast.errors import UserError
from earthcast.lightning import Checkpoint, build_module, build_trainer
from earthcast.lightning.trainer import run_overrides
from earthcast.lightning.writer import ForecastWriter
from earthcast.metrics.report import print_summary
from earthcast.signals import Stopped

log = logging.getLogger("earthcast")


def prepare(words: list[str]) -> list[str]:
    """A resumed run continues in its own run directory: checkpoints and logs append there."""
    ckpt = value_of(words, "ckpt_path")
    if not ckpt or value_of(words, "hydra.run.dir") or Path(ckpt).resolve().parent.name != "checkpoints":
        return words
    at = max(i for i, word in enumerate(words) if is_override(word) and override_key(word) == "ckpt_path")
    return [*words[:at + 1], f"hydra.run.dir={Path(ckpt).resolve().parent.parent}", *words[at + 1:]]


def run(cfg: DictConfig, checkpoint: Checkpoint | None) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    if checkpoint is not None and checkpoint.converted_from:
        raise UserError(f"{checkpoint.path} holds converted weights without a training state; start from them "
                        f"with init_from={checkpoint.path} instead of ckpt_path=")
    checkpoint = checkpoint or own_checkpoint(run_dir)
    try:
        return fit_and_test(cfg, checkpoint, run_dir)
    except Stopped as stop:
        last = run_dir / "checkpoints" / "last.ckpt"
        if stop.message or not last.is_file():
            raise
        raise Stopped(stop.signum, f"stopped by {stop.name} outside a training step; {last} holds the last "
                                   f"save; resume with: earthcast train ckpt_path={last}") from None


def own_checkpoint(run_dir: Path) -> Checkpoint | None:
    """checkpoints/last.ckpt of this run directory when it was written by this same run (same overrides)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    found = Checkpoint.read(last)
    ours, theirs = sorted(run_overrides()), sorted(found.overrides)
    if ours != theirs:
        differ = sorted(set(ours) ^ set(theirs))
        raise UserError(f"run directory {run_dir} holds another run (overrides differ: {' '.join(differ[:4])}); "
                        f"continue that one with `earthcast train ckpt_path={last}`, or pick another hydra.run.dir")
    log.info("resuming from %s (epoch %s, step %s): this run directory's own last checkpoint", last,
             found.content.get("epoch"), found.content.get("global_step"))
    return found


def fit_and_test(cfg: DictConfig, checkpoint: Checkpoint | None, run_dir: Path) -> dict:
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.dataset)
    datamodule.check_splits(["train", "val", *(["test"] if cfg.test_after_fit else [])])
    module = build_module(cfg, checkpoint)
    if cfg.init_from:
        Checkpoint.read(str(cfg.init_from)).load_weights_that_fit(module, strict=bool(cfg.init_strict))
    writer = ForecastWriter.for_run(cfg)
    trainer = build_trainer(cfg, fit=True, checkpoint=checkpoint, callbacks=[writer])

    best = None
    if module.trainable:
        resume = str(checkpoint.path) if checkpoint else None
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
        saver = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if saver is not None:
            best = saver.best_model_path or saver.last_model_path or None
    else:
        log.info("model=%s has no parameters: skipping fit", cfg.model.name)

    scores = {}
    if cfg.test_after_fit:
        source = str(best or cfg.model.name)
        writer.attrs["source"] = source
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True if best else None,
                     verbose=False)
        if trainer.is_global_zero:
            scores = writer.write_results(cfg, split="test", source=source)
    if trainer.is_global_zero:
        print_summary(f"test scores — {cfg.model.name} on {cfg.dataset.name}", scores, run_dir, {
            "best ckpt": run_dir / "checkpoints" / "best.ckpt",
            "last ckpt": run_dir / "checkpoints" / "last.ckpt",
            "metrics": run_dir / "metrics.json",
            "predictions": run_dir / "predictions.nc",
            "plots": run_dir / "plots",
            "report": run_dir / "report.md",
            "logs": run_dir / "logs",
        })
    return optimized_value(trainer, str(cfg.optimized_metric)) if cfg.optimized_metric else scores


def optimized_value(trainer, name: str) -> float:
    """The value a sweeper optimises: the best score of the monitored metric, else its last logged value."""
    saver = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if saver is not None and saver.monitor == name and saver.best_model_score is not None:
        return float(saver.best_model_score)
    if name in trainer.callback_metrics:
        return float(trainer.callback_metrics[name])
    logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
    raise UserError(f"optimized_metric={name} was not logged by this run (logged: {logged})")
