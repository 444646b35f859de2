"""`callbacks=ema`: the averaged weights are what gets checkpointed, tested after fit, and evaluated later; and
the in-module average of the PreDiff denoiser warms its decay up."""

import json

import pytest
import torch

from earthcast.lightning.ema import frozen_copy, update_average
from tests.conftest import TINY_DATA, TINY_TRAIN, compose_config, earthcast


def test_ema_weights_are_checkpointed_and_scored_consistently(workdir, data_root):
    run_dir = workdir / "runs" / "ema"
    earthcast("train", *TINY_DATA, *TINY_TRAIN, "callbacks=ema", "callbacks.ema.decay=0.5",
              f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}", cwd=workdir)
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)  # 3 steps at decay 0.5: they differ

    # the test after fit and a later `eval` of the same checkpoint score the same (averaged) weights
    out = workdir / "runs" / "ema_eval"
    earthcast("eval", f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"hydra.run.dir={out}", cwd=workdir)
    after_fit = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((out / "metrics.json").read_text())
    assert after_fit["n_samples"] == evaluated["n_samples"]
    assert evaluated["mse"] == after_fit["mse"]


def test_weight_averaging_is_left_out_of_eval_and_predict_trainers(tmp_path):
    """Outside fitting the callback has nothing to average, and the checkpoint's state_dict already is the
    average: eval/predict trainers go without it."""
    from lightning.pytorch.callbacks import WeightAveraging

    from earthcast.lightning.trainer import build_trainer

    cfg = compose_config([*TINY_DATA, *TINY_TRAIN, "callbacks=ema", f"paths.output_dir={tmp_path}"])
    averaging = [[c for c in build_trainer(cfg, fit=fit).callbacks if isinstance(c, WeightAveraging)]
                 for fit in (True, False)]
    assert [len(found) for found in averaging] == [1, 0]


def test_in_module_average_warms_its_decay_up():
    online = torch.nn.Linear(2, 2)
    average = frozen_copy(online)
    assert not any(p.requires_grad for p in average.parameters()) and not average.training
    start = average.weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    assert update_average(average, online, decay=0.99, num_updates=0) == pytest.approx(0.1)  # (1 + 0)/(10 + 0)
    assert torch.allclose(average.weight, 0.1 * start + 0.9 * online.weight)
    assert update_average(average, online, decay=0.99, num_updates=10_000) == 0.99
