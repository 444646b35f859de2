"""score a checkpoint (ckpt_path=...) or a stored forecast file (predictions=... [observations=...])

A checkpoint's model and data are rebuilt as trained (its overrides are replayed first) and scored on
`split`; a stored forecast file (the schema of docs/forecast_files.md) is scored without any model, the
evaluator picked by its `dataset` attribute unless `evaluator=` is given, against its own `target` or, with
`observations=`, against observations that exist now (a forecast made from fresh observations). Scores get
bootstrap intervals (`bootstrap.*` in configs/base.yaml), a protocol fingerprint and a forecast card (card.md).

    compare=<run dir | forecast .nc> or compare=[a,b]   put other forecasts beside this one: paired
                        differences with intervals when they scored the same samples the same way (a one-line
                        warning names what differs otherwise)
    published=<table>   the papers' scores (earthcast/metrics/published.yaml) beside ours, with the known
                        protocol differences and whether our interval covers each published value
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from earthcast.config import plain
from earthcast.data import build_datamodule
from earthcast.errors import UserError
from earthcast.lightning import Checkpoint, build_trainer, trained_module
from earthcast.lightning.writer import ForecastWriter
from earthcast.metrics.bootstrap import BootstrapSettings
from earthcast.metrics.evaluation import Evaluation
from earthcast.metrics.protocol import file_sha256, run_protocol
from earthcast.metrics.published import published_table
from earthcast.metrics.report import print_summary, write_evaluation
from earthcast.metrics.stored import score_stored_file


def run(cfg: DictConfig, checkpoint: Checkpoint | None) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    if cfg.published:
        published_table(str(cfg.published))  # a wrong name fails before any scoring
    bootstrap = BootstrapSettings.from_config(plain(cfg.bootstrap))
    if cfg.predictions:
        return score_stored(cfg, run_dir, bootstrap)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    compared = compared_evaluations(cfg, plain(cfg.evaluator), bootstrap, ours=str(cfg.model.name))
    datamodule = build_datamodule(cfg.dataset, split=str(cfg.split))
    module = trained_module(cfg, checkpoint, datamodule)
    source = str(cfg.ckpt_path or cfg.model.name)
    writer = ForecastWriter.for_run(cfg, source)
    trainer = build_trainer(cfg, fit=False, callbacks=[writer])
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    scores = writer.write_results(cfg, split=str(cfg.split), source=source, compared=compared,
                                  published=cfg.published)
    print_summary(f"{cfg.split} scores — {source}", scores, run_dir, {
        "metrics": run_dir / "metrics.json", "report": run_dir / "report.md", "card": run_dir / "card.md",
        "predictions": run_dir / "predictions.nc", "plots": run_dir / "plots"})
    return scores


def score_stored(cfg: DictConfig, run_dir: Path, bootstrap: BootstrapSettings) -> dict:
    # the file's `dataset` attribute picks the evaluator unless evaluator= was given on the command line
    explicit = HydraConfig.initialized() and any(
        o.lstrip("+").startswith("evaluator") for o in HydraConfig.get().overrides.task)
    evaluator_cfg = cfg.evaluator if explicit else None
    observations = None
    if cfg.observations:
        observations = {"path": str(cfg.observations), "variable": cfg.observations_variable,
                        "time_dim": str(cfg.observations_time_dim)}
    path = Path(str(cfg.predictions))
    results = score_stored_file(path, evaluator_cfg=evaluator_cfg, chunk_size=int(cfg.chunk_size),
                                nan_policy=cfg.nan_policy, observations=observations, bootstrap=bootstrap,
                                range_policy=str(cfg.range_policy))
    record = stored_record(path, results["file"], results["nan_policy"])
    if cfg.observations:
        record["observations"] = Path(str(cfg.observations)).name
    compared = compared_evaluations(cfg, evaluator_cfg, bootstrap, ours=record["model"]["name"])
    out = write_evaluation(run_dir, results, split=results["file"].get("split", "stored"), predictions=None,
                           plot_samples=cfg.outputs.plot_samples, report=cfg.outputs.report,
                           frame_minutes=cfg.dataset.frame_minutes,
                           about={"model": record["model"]["name"], "dataset": record["dataset"],
                                  "source": str(path),
                                  **({"observations": str(cfg.observations)} if cfg.observations else {})},
                           record=record, compared=compared, published=cfg.published)
    print_summary(f"scores of {cfg.predictions}", out, run_dir,
                  {"metrics": run_dir / "metrics.json", "report": run_dir / "report.md", "card": run_dir / "card.md"})
    return out


def stored_record(path: Path, attrs: dict[str, str], nan_policy: str) -> dict[str, Any]:
    """The run record of a stored forecast file: what its attributes say (no recipe: it is not known here)."""
    model = {"name": attrs.get("model") or path.stem, "file": str(path), "file_sha256": file_sha256(path)}
    if attrs.get("source"):
        model["made_by"] = attrs["source"]
    dataset = attrs.get("dataset", "unknown")
    if attrs.get("variable"):
        dataset = f"{dataset}:{attrs['variable']}"
    return {"dataset": dataset, "synthetic": attrs.get("synthetic") == "1",
            "nan_policy": nan_policy, "model": model, "recipe": None, "data": {"file": str(path)}}


def compared_paths(value: Any) -> list[Path]:
    if not value:
        return []
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    return [Path(str(item)) for item in values]


def compared_evaluations(cfg: DictConfig, evaluator_cfg: Any, bootstrap: BootstrapSettings,
                         ours: str) -> list[Evaluation]:
    """`compare=`: each run directory as it was scored, each forecast file scored here with our evaluator
    settings and bootstrap (so that its replicates pair with ours). `ours`: our model's name."""
    evaluations = []
    for path in compared_paths(cfg.compare):
        if path.is_dir():
            evaluations.append(Evaluation.from_run_dir(path))
        elif path.is_file():
            results = score_stored_file(path, evaluator_cfg=evaluator_cfg, chunk_size=int(cfg.chunk_size),
                                        nan_policy=cfg.nan_policy, bootstrap=bootstrap)
            record = stored_record(path, results["file"], results["nan_policy"])
            protocol = run_protocol(results["protocol"], dataset=record["dataset"],
                                    split=results["file"].get("split", "stored"), nan_policy=results["nan_policy"],
                                    synthetic=record["synthetic"])
            evaluations.append(Evaluation(record["model"]["name"], results["scores"], results["by_lead"],
                                          results["by_group"], results["replicates"], protocol, record["model"],
                                          {"path": str(path)}))
        else:
            raise UserError(f"compare={path}: no such run directory or forecast file; give an eval/train run "
                            "directory or a predictions .nc file")
    return _unique_labels(evaluations, compared_paths(cfg.compare), ours=ours)


def _unique_labels(evaluations: list[Evaluation], paths: list[Path], ours: str) -> list[Evaluation]:
    """Compared forecasts are named by their model; one of the same model as another (or as ours) is told
    apart by its path."""
    names = [evaluation.label for evaluation in evaluations] + [ours]
    for evaluation, path in zip(evaluations, paths):
        if names.count(evaluation.label) > 1:
            evaluation.label = f"{evaluation.label} ({path.name if path.is_dir() else path.stem})"
    return evaluations
