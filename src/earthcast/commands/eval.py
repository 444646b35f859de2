"""score a checkpoint (ckpt_path=...) or a stored forecast file (predictions=...)

A checkpoint's model and data are rebuilt as trained (its overrides are replayed first) and scored on
`split`; a stored forecast file (the schema of docs/forecast_files.md) is scored without any model, the
evaluator picked by its `dataset` attribute unless `evaluator=` is given.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from earthcast.data import build_datamodule
from earthcast.lightning import Checkpoint, build_trainer, trained_module
from earthcast.lightning.writer import ForecastWriter
from earthcast.metrics.report import print_summary, write_evaluation
from earthcast.metrics.stored import evaluate_stored


def run(cfg: DictConfig, checkpoint: Checkpoint | None) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    if cfg.predictions:
        return score_stored(cfg, run_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.dataset, split=str(cfg.split))
    module = trained_module(cfg, checkpoint, datamodule)
    source = str(cfg.ckpt_path or cfg.model.name)
    writer = ForecastWriter.for_run(cfg, source)
    trainer = build_trainer(cfg, fit=False, callbacks=[writer])
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    scores = writer.write_results(cfg, split=str(cfg.split), source=source)
    print_summary(f"{cfg.split} scores — {source}", scores, run_dir, {
        "metrics": run_dir / "metrics.json", "report": run_dir / "report.md",
        "predictions": run_dir / "predictions.nc", "plots": run_dir / "plots"})
    return scores


def score_stored(cfg: DictConfig, run_dir: Path) -> dict:
    # the file's `dataset` attribute picks the evaluator unless evaluator= was given on the command line
    explicit = HydraConfig.initialized() and any(
        o.lstrip("+").startswith("evaluator") for o in HydraConfig.get().overrides.task)
    scores, by_lead, by_group = evaluate_stored(str(cfg.predictions), evaluator_cfg=cfg.evaluator if explicit else None,
                                                chunk_size=int(cfg.chunk_size), nan_policy=str(cfg.nan_policy))
    results = {"scores": scores, "by_lead": by_lead, "by_group": by_group}
    out = write_evaluation(run_dir, results, split="stored", predictions=None, plot_samples=cfg.outputs.plot_samples,
                           report=cfg.outputs.report, frame_minutes=cfg.dataset.frame_minutes,
                           about={"model": cfg.model.name, "dataset": cfg.dataset.name,
                                  "source": str(cfg.predictions)})
    print_summary(f"scores of {cfg.predictions}", out, run_dir,
                  {"metrics": run_dir / "metrics.json", "report": run_dir / "report.md"})
    return out
