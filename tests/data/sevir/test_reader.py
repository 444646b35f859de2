"""SEVIR reader on hand-written roots: catalog filters, date splits, sequences, scaling, workers, errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from earthcast.data.base import DATASETS
from earthcast.data.sevir.reader import SevirDataModule, SevirSequences, read_catalog, select_vil_events
from earthcast.errors import UserError
from tests.data.sevir.conftest import FILE_A, FILE_B, config, event_frames, row, standard_rows, write_root

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_root(tmp_path / "sevir", standard_rows())


def test_catalog_keeps_unique_complete_vil_events(root: Path):
    rows = standard_rows() + [row("D1", "2018-04-01 00:00:00", FILE_A, 0), row("D1", "2018-04-02 00:00:00", FILE_A, 1)]
    events, report = select_vil_events(read_catalog(write_root(root.parent / "dup", rows)))
    assert sorted(events["id"]) == ["S1", "S2", "S3", "S4", "S5", "S6"]  # no ir069, no 5 % missing, no D1
    assert report["dropped_duplicate_rows"] == 2 and report["dropped_missing_data"] == 1
    assert events.loc[events["id"] == "S4", "event_type"].item() == ""  # random events have no type

    lenient = SevirDataModule(config(root, max_pct_missing=10.0))
    assert "S7" in set(lenient.events["id"])


def test_date_splits_are_start_exclusive_end_inclusive(tmp_path: Path):
    rows = [row("A", "2019-01-01 00:00:00", FILE_A, 0), row("B", "2019-01-01 00:00:01", FILE_A, 1),
            row("C", "2019-06-01 00:00:00", FILE_A, 2), row("D", "2019-06-01 00:05:00", FILE_A, 3)]
    datamodule = SevirDataModule(config(write_root(tmp_path / "r", rows)))
    assert list(datamodule.split_events("train")["id"]) == ["A"]
    assert list(datamodule.split_events("val")["id"]) == ["B", "C"]
    assert list(datamodule.split_events("test")["id"]) == ["D"]
    assert datamodule.split_sizes()["val"] == {"events": 2, "sequences": 6}


def test_sequences_offsets_scaling_and_layout(root: Path):
    datamodule = SevirDataModule(config(root))
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    assert len(dataset) == 2 * 3 and dataset.starts == [0, 12, 24]
    for index, (event_id, file_index, start) in enumerate(
            [("S5", 2, 0), ("S5", 2, 12), ("S5", 2, 24), ("S6", 3, 0), ("S6", 3, 12), ("S6", 3, 24)]):
        sample = dataset[index]
        assert sample["event_id"] == event_id and sample["seq_start"] == start
        frames = event_frames(file_index, 6, 6, 49).transpose(2, 0, 1)[start:start + 25, :, :, None]
        expected = torch.from_numpy(frames.astype(np.float32) / np.float32(255.0))
        assert sample["inputs"].dtype == torch.float32 and sample["inputs"].shape == (13, 6, 6, 1)
        assert torch.equal(sample["inputs"], expected[:13]) and torch.equal(sample["targets"], expected[13:])
        assert torch.equal(sample["inputs"][:, 0, 0, 0] * 255, torch.arange(start, start + 13, dtype=torch.float32))
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["inputs"].shape == (2, 13, 6, 6, 1) and batch["targets"].shape == (2, 12, 6, 6, 1)
    assert batch["event_type"] == ["Heavy Rain", "Heavy Rain"] and batch["time_utc"][0] == "2019-07-04T20:00:00"
    assert batch["seq_start"].tolist() == [0, 12]
    assert torch.allclose(datamodule.units(batch["inputs"]), batch["inputs"] * 255)


def test_other_lengths_and_strides(root: Path):
    datamodule = SevirDataModule(config(root, in_len=5, out_len=5, stride=10))
    assert datamodule.starts == [0, 10, 20, 30]
    datamodule.setup("fit")
    sample = datamodule.datasets["train"][3]
    assert sample["seq_start"] == 30 and sample["targets"][-1, 0, 0, 0] * 255 == 39


def test_workers_give_the_same_samples_as_the_main_process(root: Path):
    batches = {}
    for workers in (0, 2):
        datamodule = SevirDataModule(config(root, num_workers=workers, eval_batch_size=3))
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
        assert loader.persistent_workers == (workers > 0)
        batches[workers] = list(loader)
        datamodule.teardown("test")
    assert len(batches[0]) == len(batches[2]) == 2
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["targets"], b["targets"])
        assert a["event_id"] == b["event_id"] and torch.equal(a["seq_start"], b["seq_start"])


def test_handles_are_lazy_per_process_and_never_pickled(root: Path):
    datamodule = SevirDataModule(config(root))
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    assert dataset._handles == {}  # setup checks files but keeps nothing open
    dataset[0]
    assert dataset._handles_pid == os.getpid() and list(dataset._handles) == [FILE_A]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._handles == {} and clone._handles_pid is None
    assert torch.equal(clone[0]["inputs"], dataset[0]["inputs"])
    dataset._handles_pid = -1  # as seen from a forked child: the parent's handles are not reused
    dataset[0]
    assert dataset._handles_pid == os.getpid()
    datamodule.teardown()


def _dihedral(frames: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of T × H × W × 1 frames."""
    out = []
    for turned in (frames, frames.flip(1)):
        out += [torch.rot90(turned, k, dims=(1, 2)) for k in range(4)]
    return out


def test_augmentation_only_on_train(root: Path):
    datamodule = SevirDataModule(config(root, augment=True))
    datamodule.setup(None)
    assert datamodule.datasets["train"].augment
    assert not datamodule.datasets["val"].augment and not datamodule.datasets["test"].augment
    plain = SevirSequences(root, datamodule.split_events("val"), datamodule.starts, 13, 12)
    for index in range(len(plain)):
        assert torch.equal(datamodule.datasets["val"][index]["inputs"], plain[index]["inputs"])

    torch.manual_seed(0)
    raw = SevirSequences(root, datamodule.split_events("train"), datamodule.starts, 13, 12)[0]
    changed = 0
    for _ in range(12):
        sample = datamodule.datasets["train"][0]
        whole = torch.cat([sample["inputs"], sample["targets"]])
        candidates = _dihedral(torch.cat([raw["inputs"], raw["targets"]]))
        assert any(torch.equal(whole, c) for c in candidates)  # inputs and targets move together
        changed += not torch.equal(whole, candidates[0])
    assert changed > 0


def test_registry_describe_and_predict_split(root: Path):
    datamodule = DATASETS.get("sevir")(config(root, predict_split="val"))
    facts = datamodule.describe()
    assert facts["name"] == "sevir" and facts["frame_minutes"] == 5 and (facts["height"], facts["width"]) == (6, 6)
    assert {s: facts["splits"][s]["events"] for s in ("train", "val", "test")} == {"train": 2, "val": 2, "test": 2}
    datamodule.setup("predict")
    assert next(iter(datamodule.predict_dataloader()))["event_id"][0] == "S3"
    assert isinstance(DATASETS.get("sevirlr")(config(root)), SevirDataModule)


def _message(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_root_and_catalog(tmp_path: Path):
    with pytest.raises(UserError) as excinfo:
        SevirDataModule(config(tmp_path / "nowhere")).setup("fit")
    assert "nowhere" in _message(excinfo)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as excinfo:
        SevirDataModule(config(tmp_path / "empty")).setup("fit")
    assert "CATALOG.csv" in _message(excinfo) and "aws s3 cp" in _message(excinfo)


def test_missing_columns(root: Path):
    catalog = read_catalog(root).drop(columns=["pct_missing", "file_index"])
    catalog.to_csv(root / "CATALOG.csv", index=False)
    with pytest.raises(UserError) as excinfo:
        SevirDataModule(config(root)).setup("fit")
    assert "file_index" in _message(excinfo) and "pct_missing" in _message(excinfo)


@pytest.mark.parametrize("damage, expected", [
    ("delete", "is missing"),
    ("no_vil", "no 'vil' dataset"),
    ("float", "expected uint8"),
    ("shape", "expected N×6×6×49"),
    ("too_few", "file_index"),
])
def test_bad_hdf5_files(root: Path, damage: str, expected: str):
    path = root / "data" / FILE_B
    if damage == "delete":
        path.unlink()
    else:
        with h5py.File(path, "r+") as f:
            vil = f["vil"][()]
            del f["vil"]
            if damage == "float":
                f["vil"] = vil.astype(np.float32)
            elif damage == "shape":
                f["vil"] = vil[:, :, :, :25]
            elif damage == "too_few":
                f["vil"] = vil[:2]
    with pytest.raises(UserError) as excinfo:
        SevirDataModule(config(root)).setup("test")
    assert expected in _message(excinfo) and FILE_B in _message(excinfo)


def test_empty_split_names_split_and_dates(root: Path):
    cfg = config(root, splits={"train": [None, "2019-01-01"], "val": ["2020-01-01", "2020-06-01"],
                               "test": ["2019-06-01", None]})
    with pytest.raises(UserError) as excinfo:
        SevirDataModule(cfg).setup("validate")
    assert "dataset.splits.val" in _message(excinfo) and "2020-01-01 < time_utc ≤ 2020-06-01" in _message(excinfo)


def test_bad_config_values(root: Path):
    with pytest.raises(UserError, match="frames_per_event"):
        SevirDataModule(config(root, in_len=30, out_len=30))
    with pytest.raises(UserError, match="dataset.splits.val"):
        SevirDataModule(config(root, splits={"train": [None, "2019-01-01"], "val": ["soon"], "test": [None, None]}))
    with pytest.raises(UserError, match="predict_split"):
        SevirDataModule(config(root, predict_split="everything"))


def test_dataset_configs_compose_with_the_interface_keys(tmp_path: Path):
    keys = {"name", "root", "in_len", "out_len", "stride", "height", "width", "channels", "frames_per_event",
            "frame_minutes", "batch_size", "eval_batch_size", "num_workers", "max_pct_missing", "splits",
            "augment", "predict_split", "seed"}
    # a minimal primary config of our own, so this checks only the dataset group
    (tmp_path / "primary.yaml").write_text(f"defaults:\n  - dataset: sevir\n  - _self_\npaths:\n  data_root: /data\n"
                                           f"seed: 1\nhydra:\n  searchpath:\n    - file://{CONFIGS}\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        for name, expected in [("sevir", (384, 49, 13, 12)), ("sevirlr", (128, 25, 7, 6)),
                               ("sevir_synth", (64, 49, 13, 12)), ("sevirlr_synth", (32, 25, 7, 6))]:
            cfg = compose(config_name="primary", overrides=[f"dataset={name}"])
            dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
            assert keys <= set(dataset), name
            assert (dataset["height"], dataset["frames_per_event"], dataset["in_len"], dataset["out_len"]) == expected
            assert dataset["root"].startswith("/data/") and dataset["seed"] == 1
            if "synth" in dataset:
                assert dataset["synth"]["img_size"] == dataset["height"] == dataset["width"]
