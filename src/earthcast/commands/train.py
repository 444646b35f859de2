"""train a model (no arguments: the quickstart on the synthetic SEVIR twin), then test it

Fit on the train split, select the best checkpoint on the validation skill score (cfg.monitor), then score
that checkpoint on the test split. `ckpt_path=<run>/checkpoints/last.ckpt` resumes a run in its own run
directory, with the overrides it was composed with; `init_from=<ckpt>` starts from a trained or converted
checkpoint's weights with a fresh optimizer and schedule (fine-tuning).
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
from earthcast.lightning.writer import ForecastWriter
from earthcast.metrics.report import print_summary

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
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.dataset)
    module = build_module(cfg, checkpoint)
    if checkpoint is not None and checkpoint.converted_from:
        raise UserError(f"{checkpoint.path} holds converted weights without a training state; start from them "
                        f"with init_from={checkpoint.path} instead of ckpt_path=")
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
    return scores
