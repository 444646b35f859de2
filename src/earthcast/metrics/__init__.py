"""Forecast evaluation without Lightning: DDP-syncing torchmetrics accumulators and stored-forecast scoring.

    from earthcast.metrics import build_evaluator
    evaluator = build_evaluator({"name": "sevir", "thresholds": [16, 74, 133, 160, 181, 219]})
    evaluator.update(pred, target, context=context, meta=batch_meta)   # per batch
    metrics = evaluator.compute()             # flat dict for metrics.json (NaN → None)
    by_lead = evaluator.compute_by_lead()     # DataFrame → metrics_by_lead.csv
    by_group = evaluator.compute_by_group()   # DataFrame, one row per event type / init month

`earthcast.metrics.stored.evaluate_stored` scores a forecast netCDF; `earthcast.metrics.report.write_report`
renders report.md with plots.
"""

from earthcast.metrics.base import EVALUATORS, ForecastEvaluator, build_evaluator
from earthcast.metrics.enso import EnsoEvaluator
from earthcast.metrics.gridded import GriddedEvaluator
from earthcast.metrics.nino import nino34_index
from earthcast.metrics.sevir import SevirEvaluator

__all__ = [
    "EVALUATORS",
    "EnsoEvaluator",
    "GriddedEvaluator",
    "ForecastEvaluator",
    "SevirEvaluator",
    "build_evaluator",
    "nino34_index",
]
