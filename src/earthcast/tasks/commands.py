"""What each subcommand does once Hydra has composed its config (the CLI lives in earthcast.cli)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from earthcast.data import build_datamodule
from earthcast.data.base import evaluation_sampler
from earthcast.data.predictions import PredictionWriter, merge_rank_parts, rank_part_path
from earthcast.errors import UserError
from earthcast.tasks.base import EarthcastTask, build_task
from earthcast.tasks.runtime import (
    build_trainer,
    checkpoint_callback,
    initialize_weights,
    load_checkpoint,
    restore_datamodule_state,
    restore_weights,
    write_csv_atomic,
    write_json_atomic,
)

log = logging.getLogger("earthcast")
console = Console(stderr=False)
HEADLINE_KEYS = ("csi_m", "csi_219", "csi_m_pool16", "mse", "mae", "crps", "nino34_corr_m", "nino34_corr_wm",
                 "nino34_rmse")
_SPLIT_STAGE = {"train": "fit", "val": "validate", "test": "test"}


def _run_overrides() -> list[str]:
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task
            if not o.lstrip("+~").startswith(("hydra.", "hydra/", "ckpt_path=", "init_from=", "init_strict="))]


def _split_loader(datamodule, split: str, trainer: L.Trainer | None = None) -> DataLoader:
    """The split's loader for evaluation; with a multi-process `trainer`, this rank's unrepeated share of it."""
    if split not in _SPLIT_STAGE:
        raise UserError(f"split={split!r} is not one of train, val, test")
    datamodule.setup(_SPLIT_STAGE[split])
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[split]()
    sampler = evaluation_sampler(loader.dataset, trainer.world_size, trainer.global_rank) if trainer else None
    if sampler is None:
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      persistent_workers=loader.persistent_workers)


def _prediction_writer(cfg: DictConfig, run_dir: Path, max_samples, source: str,
                       trainer: L.Trainer) -> PredictionWriter:
    """predictions.nc; under DDP every rank writes its own share, joined by `_finish_predictions`."""
    path = run_dir / "predictions.nc"
    if trainer.world_size > 1:
        path = rank_part_path(path, trainer.global_rank)
    return PredictionWriter(path, dataset=str(cfg.dataset.name),
                            attrs={"model": cfg.model.name, "source": source,
                                   "frame_minutes": cfg.dataset.get("frame_minutes") or ""},
                            max_samples=max_samples)


def _finish_predictions(writer: PredictionWriter, trainer: L.Trainer, run_dir: Path, max_samples) -> Path | None:
    path = writer.close()
    if trainer.world_size == 1:
        return path
    trainer.strategy.barrier("predictions written")
    merged = merge_rank_parts(run_dir / "predictions.nc", trainer.world_size, max_samples) \
        if trainer.is_global_zero else None
    trainer.strategy.barrier("predictions merged")
    return merged


def _test_with_outputs(cfg: DictConfig, trainer: L.Trainer, task: EarthcastTask, run_dir: Path, *,
                       datamodule=None, dataloader=None, ckpt_path=None, split="test", source="") -> dict:
    """Run the test loop, then write metrics.json, per-lead/group tables, predictions.nc, plots, report."""
    writer = _prediction_writer(cfg, run_dir, cfg.outputs.max_prediction_samples, source, trainer)
    task.prediction_sink = writer
    try:
        trainer.test(task, datamodule=datamodule, dataloaders=dataloader, ckpt_path=ckpt_path,
                     weights_only=True if ckpt_path else None, verbose=False)
    except BaseException:
        writer.abort()
        raise
    predictions = _finish_predictions(writer, trainer, run_dir, cfg.outputs.max_prediction_samples)
    task.prediction_sink = None
    if not trainer.is_global_zero:
        return {}
    results = task.test_results
    return write_evaluation(cfg, run_dir, results, split=split, predictions=predictions, source=source)


def write_evaluation(cfg: DictConfig, run_dir: Path, results: dict, *, split: str, predictions: Path | None,
                     source: str) -> dict:
    scores = {"split": split, **results["scores"]}
    write_json_atomic(run_dir / "metrics.json", scores)
    if results.get("by_lead") is not None:
        write_csv_atomic(run_dir / "metrics_by_lead.csv", results["by_lead"])
    if results.get("by_group") is not None and len(results["by_group"]):
        write_csv_atomic(run_dir / "metrics_by_group.csv", results["by_group"])
    plots = []
    if predictions is not None and cfg.outputs.plot_samples:
        from earthcast.viz import plot_forecast_file

        plots = plot_forecast_file(predictions, run_dir / "plots", n_samples=int(cfg.outputs.plot_samples),
                                   frame_minutes=cfg.dataset.get("frame_minutes"))
    if cfg.outputs.get("report", True):
        from earthcast.metrics.report import write_report

        write_report(run_dir, results["scores"], results.get("by_lead"), results.get("by_group"),
                     extra={"split": split, "model": cfg.model.name, "dataset": cfg.dataset.name,
                            "source": source, "sequence_plots": [str(p.relative_to(run_dir)) for p in plots]})
    return scores


def summary_keys(scores: dict) -> list[str]:
    """The headline scores present; a task with none of them (e.g. the PreDiff alignment stage) shows all of
    its own scalar scores instead of an empty table."""
    keys = [key for key in HEADLINE_KEYS if key in scores]
    return keys or sorted(k for k, v in scores.items()
                          if "/" not in k and (v is None or isinstance(v, (int, float))))


def print_summary(title: str, scores: dict, run_dir: Path, extra_paths: dict[str, Path | None]) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("persistence", justify="right")
    for key in summary_keys(scores):
        value, ref = scores[key], scores.get(f"persistence/{key}")
        table.add_row(key, *("—" if v is None else f"{v:.4f}" for v in (value, ref)))
    console.print(table)
    console.print(f"run directory: {run_dir}")
    for label, path in extra_paths.items():
        if path is not None and Path(path).exists():
            console.print(f"  {label:<12} {path}")


# -- train ------------------------------------------------------------------------------------------
def run_train(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.dataset)
    task = build_task(cfg)
    task.to_physical_fn = datamodule.to_physical
    task.run_overrides = _run_overrides()
    trainer = build_trainer(cfg, fit=True)

    if cfg.get("init_from"):
        initialize_weights(task, str(cfg.init_from), strict=bool(cfg.get("init_strict", True)))

    best = None
    if task.trainable:
        resume = cfg.get("ckpt_path")
        if resume and load_checkpoint(resume).get("earthcast", {}).get("converted_from"):
            raise UserError(f"{resume} holds converted weights without a training state; start from them with "
                            f"init_from={resume} instead of ckpt_path=")
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
        callback = checkpoint_callback(trainer)
        if callback is not None:
            best = callback.best_model_path or callback.last_model_path or None
    else:
        log.info("model=%s has no parameters: skipping fit", cfg.model.name)

    scores = {}
    if cfg.get("test_after_fit", True):
        scores = _test_with_outputs(cfg, trainer, task, run_dir, datamodule=datamodule, ckpt_path=best,
                                    source=str(best or cfg.model.name))
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


# -- eval / predict ---------------------------------------------------------------------------------
def _task_from_checkpoint(cfg: DictConfig, datamodule):
    """The model as trained (config replayed by the CLI, weights from the checkpoint)."""
    task = build_task(cfg)
    checkpoint = None
    if cfg.get("ckpt_path"):
        checkpoint = load_checkpoint(cfg.ckpt_path)
        restore_datamodule_state(datamodule, checkpoint)
        restore_weights(task, checkpoint, cfg.ckpt_path)
    elif task.trainable:
        raise UserError(f"model={cfg.model.name} needs weights: pass ckpt_path=<run dir>/checkpoints/best.ckpt")
    task.to_physical_fn = datamodule.to_physical
    return task


def run_eval(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("predictions"):
        return run_eval_stored(cfg, run_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.dataset)
    task = _task_from_checkpoint(cfg, datamodule)
    trainer = build_trainer(cfg, fit=False)
    loader = _split_loader(datamodule, str(cfg.split), trainer)
    source = str(cfg.ckpt_path or cfg.model.name)
    scores = _test_with_outputs(cfg, trainer, task, run_dir, dataloader=loader, split=str(cfg.split),
                                source=source)
    if trainer.is_global_zero:
        print_summary(f"{cfg.split} scores — {source}", scores, run_dir, {
            "metrics": run_dir / "metrics.json", "report": run_dir / "report.md",
            "predictions": run_dir / "predictions.nc", "plots": run_dir / "plots"})
    return scores


def run_eval_stored(cfg: DictConfig, run_dir: Path) -> dict:
    from earthcast.metrics.stored import evaluate_stored

    # the file's `dataset` attribute picks the evaluator unless evaluator= was given on the command line
    explicit = HydraConfig.initialized() and any(
        o.lstrip("+").startswith("evaluator") for o in HydraConfig.get().overrides.task)
    evaluator_cfg = OmegaConf.to_container(cfg.evaluator, resolve=True) if explicit else None
    scores, by_lead, by_group = evaluate_stored(str(cfg.predictions), evaluator_cfg=evaluator_cfg,
                                                chunk_size=int(cfg.chunk_size), nan_policy=str(cfg.nan_policy))
    results = {"scores": scores, "by_lead": by_lead, "by_group": by_group}
    out = write_evaluation(cfg, run_dir, results, split="stored", predictions=None, source=str(cfg.predictions))
    print_summary(f"scores of {cfg.predictions}", out, run_dir,
                  {"metrics": run_dir / "metrics.json", "report": run_dir / "report.md"})
    return out


def run_predict(cfg: DictConfig) -> Path | None:
    run_dir = Path(cfg.paths.output_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.dataset)
    task = _task_from_checkpoint(cfg, datamodule)
    trainer = build_trainer(cfg, fit=False)
    loader = _split_loader(datamodule, str(cfg.split), trainer)
    writer = _prediction_writer(cfg, run_dir, cfg.outputs.max_prediction_samples, str(cfg.ckpt_path or ""),
                                trainer)
    task.prediction_sink = writer
    try:
        trainer.predict(task, dataloaders=loader, return_predictions=False)
    except BaseException:
        writer.abort()
        raise
    path = _finish_predictions(writer, trainer, run_dir, cfg.outputs.max_prediction_samples)
    if trainer.is_global_zero:
        console.print(f"wrote forecasts to {path}")
    return path
