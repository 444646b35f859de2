"""What a test or predict run leaves behind: the forecasts, streamed into predictions.nc, and the scores.

`ForecastWriter` is a BasePredictionWriter: it takes the outputs the module's test and predict steps return
({prediction, target, context, meta} in physical units) batch by batch. Under DDP every rank writes its own
part and rank 0 joins them in dataset order. At the end of a test epoch it asks the module for its results
(on every rank: the evaluators sync their states), which the command then writes and prints.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig

from earthcast.data.forecast_file import ForecastFile, merge_rank_parts, rank_part_path
from earthcast.metrics.report import write_evaluation


class ForecastWriter(BasePredictionWriter):
    def __init__(self, path: str | Path, dataset: str, attrs: dict, max_samples: int | None):
        super().__init__(write_interval="batch")
        self.path, self.dataset, self.attrs, self.max_samples = Path(path), dataset, attrs, max_samples
        self.file: ForecastFile | None = None
        self.written: Path | None = None  # predictions.nc once complete (None when nothing was written)
        self.results: dict | None = None  # the module's test results

    @classmethod
    def for_run(cls, cfg: DictConfig, source: str = "", **attrs) -> ForecastWriter:
        """The run directory's predictions.nc: the first outputs.max_prediction_samples forecasts, attributed to
        the model and its source (`attrs`: more global attributes)."""
        return cls(Path(cfg.paths.output_dir) / "predictions.nc", dataset=str(cfg.dataset.name),
                   attrs={"model": cfg.model.name, "source": source, **attrs,
                          "frame_minutes": cfg.dataset.frame_minutes or ""},
                   max_samples=cfg.outputs.max_prediction_samples)

    def write_results(self, cfg: DictConfig, *, split: str, source: str) -> dict:
        """metrics.json, tables, plots and report.md of the test run just finished (call on rank 0)."""
        return write_evaluation(cfg.paths.output_dir, self.results, split=split, predictions=self.written,
                                plot_samples=cfg.outputs.plot_samples, report=cfg.outputs.report,
                                frame_minutes=cfg.dataset.frame_minutes,
                                about={"model": cfg.model.name, "dataset": cfg.dataset.name, "source": source})

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage in ("test", "predict"):
            path = rank_part_path(self.path, trainer.global_rank) if trainer.world_size > 1 else self.path
            self.file = ForecastFile(path, self.dataset, self.attrs, self.max_samples)

    def _write(self, outputs) -> None:
        if outputs is not None and self.file is not None:
            self.file.write(outputs["prediction"], outputs["target"], outputs["context"], outputs["meta"])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self._write(prediction)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(outputs)

    def _finish(self, trainer) -> None:
        path = self.file.close()
        self.file = None
        if trainer.world_size == 1:
            self.written = path
            return
        trainer.strategy.barrier("predictions written")
        if trainer.is_global_zero:
            self.written = merge_rank_parts(self.path, trainer.world_size, self.max_samples)
        trainer.strategy.barrier("predictions merged")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer)
        # computed here, on every rank, while the process group is alive (the evaluators sync their states)
        self.results = pl_module.test_results()

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.file is not None:
            self.file.abort()
            self.file = None
