"""What a test or predict run leaves behind: the forecasts, streamed into predictions.nc, and the scores.

`ForecastWriter` is a BasePredictionWriter: it takes the outputs the module's test and predict steps return
({prediction, target, context, meta} in physical units) batch by batch. Under DDP every rank writes its own
part and rank 0 joins them in dataset order. At the end of a test epoch it asks the module for its results
(on every rank: the evaluators sync their states), which the command then writes and prints, with the run's
record (`run_record`: dataset, model and checkpoint hashes, training recipe) for the protocol and the card.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig

from earthcast.config import plain
from earthcast.data.forecast_file import ForecastFile, merge_rank_parts, rank_part_path
from earthcast.errors import UserError
from earthcast.metrics.evaluation import Evaluation
from earthcast.metrics.protocol import model_record
from earthcast.metrics.report import write_evaluation
from earthcast.metrics.stored import MASKING_EVALUATORS

#: the run config's training choices shown as the card's recipe
RECIPE_KEYS = {"module": "module", "loss": "loss", "optimizer": "optim.name", "lr": "optim.lr",
               "weight_decay": "optim.weight_decay", "warmup_fraction": "optim.warmup_fraction",
               "max_epochs": "trainer.max_epochs", "max_steps": "trainer.max_steps", "precision": "trainer.precision",
               "batch_size": "dataset.batch_size", "seed": "seed", "init_from": "init_from"}
DATA_KEYS = ("name", "root", "path", "variable", "splits", "in_len", "out_len", "stride", "height", "width",
             "frame_minutes")


class ForecastWriter(BasePredictionWriter):
    def __init__(self, path: str | Path, dataset: str, attrs: dict, max_samples: int | None):
        super().__init__(write_interval="batch")
        self.path, self.dataset, self.attrs, self.max_samples = Path(path), dataset, attrs, max_samples
        self.file: ForecastFile | None = None
        self.written: Path | None = None  # predictions.nc once complete (None when nothing was written)
        self.results: dict | None = None  # the module's test results
        self.parameters: int | None = None  # of the module tested
        # non-finite forecasts stop a test run, unless the evaluator leaves such points out itself
        self.nan_policy = "fail"

    @classmethod
    def for_run(cls, cfg: DictConfig, source: str = "", **attrs) -> ForecastWriter:
        """The run directory's predictions.nc: the first outputs.max_prediction_samples forecasts, attributed to
        the model and its source (`attrs`: more global attributes)."""
        return cls(Path(cfg.paths.output_dir) / "predictions.nc", dataset=str(cfg.dataset.name),
                   attrs={"model": cfg.model.name, "source": source, **attrs,
                          "frame_minutes": cfg.dataset.frame_minutes or "",
                          # train runs test on the test split; the other commands name theirs
                          "split": str(cfg.split) if "split" in cfg else "test",
                          "synthetic": int("synth" in cfg.dataset)},
                   max_samples=cfg.outputs.max_prediction_samples)

    def write_results(self, cfg: DictConfig, *, split: str, source: str, compared: Sequence[Evaluation] = (),
                      published: str | None = None) -> dict:
        """metrics.json, tables, plots, report.md and card.md of the test run just finished (call on rank 0);
        `compared` and `published` put other forecasts' and the papers' scores beside them."""
        return write_evaluation(cfg.paths.output_dir, self.results, split=split, predictions=self.written,
                                plot_samples=cfg.outputs.plot_samples, report=cfg.outputs.report,
                                frame_minutes=cfg.dataset.frame_minutes,
                                about={"model": cfg.model.name, "dataset": cfg.dataset.name, "source": source},
                                record=run_record(cfg, source, self.parameters, self.nan_policy),
                                compared=compared, published=published)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if isinstance(getattr(pl_module, "test_evaluator", None), MASKING_EVALUATORS):
            self.nan_policy = "mask"
        if stage in ("test", "predict"):
            path = rank_part_path(self.path, trainer.global_rank) if trainer.world_size > 1 else self.path
            datamodule = trainer.datamodule
            layout = datamodule.forecast_layout() if hasattr(datamodule, "forecast_layout") else None
            self.file = ForecastFile(path, self.dataset, self.attrs, self.max_samples, layout)

    def _write(self, outputs) -> None:
        if outputs is not None and self.file is not None:
            self.file.write(outputs["prediction"], outputs.get("target"), outputs["context"], outputs["meta"])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self._write(prediction)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        finite = outputs is None or bool(torch.isfinite(outputs["prediction"]).all())
        if self.nan_policy == "fail" and not finite:
            # scores summed over NaN forecasts would be NaN: the protocol's nan_policy is "fail"
            raise UserError(f"the model forecast NaN/inf values in test batch {batch_idx} (rank "
                            f"{trainer.global_rank}); its scores would be undefined — check the checkpoint")
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
        self.parameters = sum(parameter.numel() for parameter in pl_module.parameters())

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.file is not None:
            self.file.abort()
            self.file = None


def run_record(cfg: DictConfig, source: str, parameters: int | None = None,
               nan_policy: str = "fail") -> dict[str, Any]:
    """What the protocol and the card say about a run built from `cfg`: the dataset (and whether it is a
    synthetic twin), the model (config hash; the checkpoint's sha256 when `source` is a checkpoint file), the
    training recipe and the data settings."""
    config = plain(cfg)
    recipe = {}
    for label, path in RECIPE_KEYS.items():
        value = config
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            recipe[label] = value
    dataset = config["dataset"]
    # a gridded dataset is named by its variable too: two variables are two protocols
    name = f"{dataset['name']}:{dataset['variable']}" if dataset.get("variable") else str(dataset["name"])
    return {"dataset": name, "synthetic": "synth" in dataset,
            "nan_policy": nan_policy,
            "model": model_record(config["model"]["name"], config["model"], source),
            "model_facts": {} if parameters is None else {"parameters": parameters},
            "recipe": recipe, "data": {key: dataset[key] for key in DATA_KEYS if dataset.get(key) is not None}}
