"""The data interface: physical units, which split the evaluation loaders serve and how, and the splits checked
before a fit."""

from __future__ import annotations

import pytest
import torch

from earthcast.data.base import PhysicalUnits, metadata
from earthcast.data.loaders import EpochShuffle
from earthcast.data.sevir.reader import SevirDataModule
from earthcast.errors import UserError
from tests.data.sevir.conftest import config, standard_rows, write_root


def test_units_convert_values_with_the_offset_and_differences_without():
    celsius = PhysicalUnits(scale=20.0, offset=-5.0)
    assert float(celsius(torch.tensor(0.5))) == 5.0 and celsius.difference(0.5) == 10.0
    assert celsius.to_model(5.0) == 0.5
    vil = PhysicalUnits(255.0)
    assert torch.equal(vil(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 255.0])) and vil.to_model(51.0) == 0.2


def test_metadata_is_everything_but_the_tensors():
    assert metadata({"inputs": 1, "targets": 2, "event_id": ["a"]}) == {"event_id": ["a"]}


def test_a_datamodule_built_for_a_split_serves_it_to_test_and_predict(tmp_path):
    root = write_root(tmp_path / "r", standard_rows())
    datamodule = SevirDataModule(config(root), split="val")
    datamodule.setup("test")
    assert set(datamodule.datasets) == {"val"}
    assert len(datamodule.test_dataloader().dataset) == len(datamodule.predict_dataloader().dataset) == 6
    with pytest.raises(UserError, match="split='holdout'"):
        SevirDataModule(config(root), split="holdout")


def test_a_datamodule_built_for_evaluation_reads_the_train_split_in_order_and_unaugmented(tmp_path):
    root = write_root(tmp_path / "r", standard_rows())
    evaluating = SevirDataModule(config(root, augment=True), split="train")
    loader = evaluating.test_dataloader()
    assert not isinstance(loader.sampler, EpochShuffle) and not loader.dataset.augment
    assert [int(i) for i in loader.sampler] == list(range(len(loader.dataset)))
    fitting = SevirDataModule(config(root, augment=True))
    assert isinstance(fitting.train_dataloader().sampler, EpochShuffle) and fitting.dataset("train").augment


def test_every_split_is_checked_before_fitting(tmp_path):
    rows = [r for r in standard_rows() if not r["time_utc"].startswith("2019-0")]  # no val/test events
    datamodule = SevirDataModule(config(write_root(tmp_path / "r", rows)))
    with pytest.raises(UserError, match=r"dataset.splits.val .* selects no events"):
        datamodule.check_splits(["train", "val", "test"])
