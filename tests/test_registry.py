"""`_target_: my_package.MyThing` beside registry names: a user's own model, dataset or evaluator class plugs in
without being registered, and a wrong path is a one-line error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from earthcast.data import build_datamodule
from earthcast.data.sevir.reader import SevirDataModule
from earthcast.errors import UserError
from earthcast.metrics import SevirEvaluator, build_evaluator
from earthcast.models import Forecaster, build_model
from tests.conftest import dataset_config, earthcast


class LastFrameTimesTwo(Forecaster):
    """A user's model: the last input frame, doubled, for every lead."""

    def __init__(self, in_len: int, out_len: int, gain: float = 2.0):
        super().__init__(in_len, out_len)
        self.gain = torch.nn.Parameter(torch.tensor(gain))

    def forward(self, inputs):
        return (self.gain * inputs[:, -1:]).expand(-1, self.out_len, -1, -1, -1)


class UserSevir(SevirDataModule):
    """A user's datamodule (here: SEVIR's, under another class)."""


def test_model_from_target():
    model = build_model({"_target_": "tests.test_registry.LastFrameTimesTwo", "name": "mine", "in_len": 3,
                         "out_len": 2, "gain": 3.0})
    out = model(torch.ones(1, 3, 4, 4, 1))
    assert out.shape == (1, 2, 4, 4, 1) and torch.all(out == 3.0)
    with pytest.raises(UserError, match="model.depth is not a setting"):
        build_model({"_target_": "tests.test_registry.LastFrameTimesTwo", "in_len": 3, "out_len": 2, "depth": 2})
    with pytest.raises(UserError, match="not a subclass of earthcast.models.Forecaster"):
        build_model({"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 2})


def test_dataset_and_evaluator_from_target(tmp_path):
    cfg = dataset_config("sevir_synth", root=str(tmp_path / "none"), synth=None,
                         _target_="tests.test_registry.UserSevir")
    assert type(build_datamodule(cfg)) is UserSevir
    evaluator = build_evaluator({"_target_": "earthcast.metrics.sevir.SevirEvaluator", "thresholds": [1.0]})
    assert isinstance(evaluator, SevirEvaluator) and evaluator.thresholds == [1.0]


@pytest.mark.parametrize("path, fragment", [("nosuchpackage.Thing", "cannot import nosuchpackage"),
                                            ("earthcast.models.NoSuchModel", "has no 'NoSuchModel'"),
                                            ("Thing", "dotted path")])
def test_bad_targets_are_one_line_errors(path, fragment):
    with pytest.raises(UserError, match=fragment):
        build_model({"_target_": path, "in_len": 1, "out_len": 1})


def test_a_users_model_trains_through_the_command_line(workdir, data_root):
    from tests.conftest import TINY_DATA, TINY_TRAIN

    run_dir = workdir / "runs" / "target_model"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
              "+model._target_=tests.test_registry.LastFrameTimesTwo", "~model.base_units", "~model.depth",
              "~model.norm", "~model.dropout", "~model.channels", "+model.gain=1.0", "outputs.plot_samples=0",
              cwd=workdir, env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})  # `tests` importable
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "metrics.json").is_file()
