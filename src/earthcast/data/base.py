"""The data interface every dataset implements, and what their LightningDataModules share.

Datasets are `ForecastDataModule`s registered by name in `DATASETS`, built from `cfg.dataset`.
Each batch is a dict:
    "inputs":  float32 B × T_in  × H × W × C, normalised for the model (SEVIR: VIL/255)
    "targets": float32 B × T_out × H × W × C, same scale
    plus per-sample metadata that collates to lists/tensors, e.g. SEVIR "event_id", "event_type",
    "time_utc" (ISO strings); ENSO "lat", "lon" (degrees), "init_month".
A datamodule also provides
    units     `PhysicalUnits`: the model scale back to physical units (SEVIR: VIL 0–255; ENSO: °C), for
              the evaluators, stored forecasts and figures
    describe() a dict of facts for reports (name, frame interval in minutes, grid, split sizes)
    forecast_layout()  how its forecasts are described in forecast files (ForecastLayout)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Sampler

from earthcast.data.loaders import EpochShuffle, ResumableLoader
from earthcast.errors import UserError
from earthcast.registry import Registry

DATASETS = Registry("dataset")
#: synthetic twin generators: name -> callable(cfg_dataset, progress) writing a dataset root
SYNTHESIZERS = Registry("synthetic dataset")
#: root validators: name -> callable(cfg_dataset) returning a report dict (`earthcast data check`)
CHECKERS = Registry("dataset checker")

SPLITS = ("train", "val", "test")
#: written into every synthetic twin's root: the dataset settings that shaped its files (earthcast.data.synthesize)
TWIN_RECORD = "earthcast_synth.json"
#: keys of a batch that hold tensors the model reads; the rest is per-sample metadata
TENSOR_KEYS = ("inputs", "targets")


def write_twin_record(root, cfg: dict, keys: tuple[str, ...]) -> None:
    """Record the dataset keys that shaped a twin's files in its root (called by the generators, inside the
    directory they publish atomically)."""
    from earthcast.io import write_json

    write_json(Path(root) / TWIN_RECORD, {key: cfg[key] for key in keys})


def metadata(batch: dict) -> dict:
    """The per-sample metadata of a batch (everything but inputs and targets)."""
    return {key: value for key, value in batch.items() if key not in TENSOR_KEYS}


@dataclass(frozen=True)
class PhysicalUnits:
    """physical = model value · scale + offset (SEVIR: VIL = x · 255; ENSO: °C = x · (max − min) + min).

    Values convert with the offset, differences (errors, spreads, moves) with the scale alone."""

    scale: float
    offset: float = 0.0

    def __call__(self, value):
        return value * self.scale + self.offset if self.offset else value * self.scale

    def difference(self, value):
        return value * self.scale

    def to_model(self, value):
        return (value - self.offset) / self.scale if self.offset else value / self.scale


@dataclass
class ForecastLayout:
    """How a dataset's forecasts are described in a forecast file (earthcast.data.forecast_file): the grid's
    dims, their coordinate values with CF attributes (dim → (values, attrs); a grid without them, e.g. ENSO's
    per-batch lat/lon, takes them from the batches), the time between frames (None: leads are counted in
    `lead_units`), the forecast variable's attributes (units, long_name, standard_name) and global attributes."""

    grid: tuple[str, str] = ("y", "x")
    coords: dict[str, tuple[Any, dict]] = field(default_factory=dict)
    frame: Any = None  # pandas.Timedelta
    lead_units: str = "1"
    variable: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


def evaluation_sampler(dataset, world_size: int | None = None, rank: int | None = None) -> Sampler | None:
    """Under DDP, each rank scores a disjoint share of `dataset` and every sample exactly once.

    Lightning's default for val/test is a DistributedSampler, which pads the shares to equal length with
    repeated samples, so the synced metrics count some samples twice. Rank r here gets samples r, r + W, …;
    shares may differ by one batch, which is safe because evaluators sync only at the epoch's end. World size
    and rank come from the arguments or else from the initialised process group; None when there is only one
    process."""
    if world_size is None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return None
        world_size, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if world_size == 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)


class ForecastDataModule(L.LightningDataModule):
    """Loaders of the train/val/test splits from `cfg.dataset`; a subclass supplies `dataset(split)`, `units`
    and `describe()`.

    Built for evaluation (`split=...`: `earthcast eval` / `predict` / `sample`), the test and predict loaders
    serve that split; otherwise test serves "test" and predict `dataset.predict_split`."""

    def __init__(self, cfg: dict, split: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.name = str(cfg["name"])
        self.batch_size = int(cfg["batch_size"])
        self.eval_batch_size = int(cfg["eval_batch_size"] or self.batch_size)
        self.num_workers = int(cfg["num_workers"])
        self.seed = int(cfg["seed"])
        if split is not None and split not in SPLITS:
            raise UserError(f"split={split!r} is not one of {', '.join(SPLITS)}")
        # built for evaluation (eval/predict/sample): every split is read in order and as stored, train included
        self.evaluating = split is not None
        self.test_split = split or "test"
        self.train_loader: ResumableLoader | None = None
        self.resume_position: dict | None = None  # from a checkpoint, applied when the train loader is built
        self.predict_split = split or str(cfg["predict_split"])

    # -- what a dataset supplies
    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    @property
    def units(self) -> PhysicalUnits:
        raise NotImplementedError

    def load_split(self, split: str) -> None:
        """Read what `split` needs before its loader is built (Lightning's setup)."""
        self.dataset(split)

    # -- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ["train", "val"], "validate": ["val"], "test": [self.test_split],
                  "predict": [self.predict_split]}.get(stage or "", list(SPLITS))
        for split in needed:
            self.load_split(split)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split)

    def check_splits(self, splits) -> None:
        """Read what each of `splits` needs now (one-line errors before any training, not after the fit)."""
        for split in splits:
            self.dataset(split)

    def _loader(self, split: str) -> DataLoader:
        """Train: a new order every epoch that a resumed run reproduces (earthcast.data.loaders; under DDP
        Lightning's distributed sampler). Evaluation, and any split of a datamodule built for evaluation: in
        order, and under DDP each rank's unrepeated share."""
        dataset = self.dataset(split)
        fitting = split == "train" and not self.evaluating and (
            self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING)
        options = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                   "pin_memory": torch.cuda.is_available()}
        if fitting and (self.trainer is None or self.trainer.world_size == 1):
            self.train_loader = ResumableLoader(dataset, batch_size=self.batch_size,
                                                sampler=EpochShuffle(len(dataset), self.seed),
                                                progress=self._train_progress, **options)
            if self.resume_position:
                self.train_loader.load_state_dict(self.resume_position)
                self.resume_position = None
            return self.train_loader
        if fitting:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, **options)
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=evaluation_sampler(dataset), **options)

    def state_dict(self) -> dict[str, Any]:
        """Saved by Lightning in every checkpoint: where the train loader stands. Restored from here rather than
        from the loader's own state, which Lightning skips when the loader was built before the restore (as
        it is when the LR schedule asks for trainer.estimated_stepping_batches)."""
        return {"train_position": self.train_loader.state_dict()} if self.train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume_position = state_dict.get("train_position")

    def _train_progress(self) -> tuple[int, bool]:
        """Training batches of the current epoch finished, and whether that is the whole epoch."""
        if self.trainer is None:
            return 0, False
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done, done >= self.trainer.num_training_batches

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def forecast_layout(self) -> ForecastLayout:
        return ForecastLayout()
