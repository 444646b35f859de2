"""evaluator=gridded by hand: masked points (NaN targets, the batch's mask) leave every score, categorical
counts and the ensemble scores alike; the masked training loss averages over the points that count."""

from __future__ import annotations

import math

import pytest
import torch

from earthcast.lightning.losses import LOSSES
from earthcast.metrics import build_evaluator


def test_masked_scores_by_hand():
    # one sample, two leads, a 1×3 row; the third point is land (mask), lead 2's second point is missing (NaN)
    target = torch.tensor([[[[1.0, 2.0, 9.0]], [[3.0, math.nan, 9.0]]]])
    prediction = torch.tensor([[[[2.0, 2.0, 0.0]], [[1.0, 5.0, 0.0]]]])
    mask = torch.tensor([True, True, False]).expand(1, 2, 1, 3)
    evaluator = build_evaluator({"name": "gridded", "thresholds": [1.5], "reference": False})
    evaluator.update(prediction, target, meta={"mask": mask, "init_time": ["2021-03-01T00:00:00"]})
    scores = evaluator.compute()
    # valid errors: +1, 0 (lead 1), −2 (lead 2): mse 5/3, mae 1, mean error −1/3
    assert scores["mse"] == pytest.approx(5 / 3) and scores["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert scores["mae"] == pytest.approx(1.0) and scores["mean_error"] == pytest.approx(-1 / 3)
    assert scores["crps"] == pytest.approx(1.0)  # a deterministic forecast's CRPS is its MAE
    # event ≥ 1.5 at the valid points: (f 2, o 1) false alarm, (2, 2) hit, (1, 3) miss → CSI 1/3, bias 2/2
    assert scores["csi_1.5"] == pytest.approx(1 / 3) and scores["frequency_bias_1.5"] == pytest.approx(1.0)
    assert scores["hss_1.5"] == pytest.approx(-0.5)  # a=1, b=1, c=1, d=0: 2(0 − 1)/((2)(1) + (2)(1))
    by_lead = evaluator.compute_by_lead()
    assert by_lead["mse"].tolist() == pytest.approx([0.5, 4.0])
    assert evaluator.compute_by_group()["group"].tolist() == [3]  # March


def test_persistence_and_ensembles_leave_masked_points_out():
    target = torch.tensor([[[[1.0, math.nan]]]])
    context = torch.tensor([[[[0.0, 5.0]], [[3.0, 7.0]]]])
    members = torch.tensor([[[[[0.0, 100.0]]], [[[2.0, -100.0]]]]])  # B × M × T × H × W
    evaluator = build_evaluator({"name": "gridded", "crps_estimator": "fair"})
    evaluator.update(members, target, context=context)
    scores = evaluator.compute()
    # members 0, 2 against 1 at the one valid point: fair CRPS = (1 + 1)/2 − |0 − 2|/2 = 0; mean 1 → mse 0
    assert scores["crps"] == pytest.approx(0.0) and scores["mse"] == pytest.approx(0.0)
    assert scores["persistence/mse"] == pytest.approx(4.0)  # last context frame 3 vs 1
    assert scores["rank_hist_0"] + scores["rank_hist_1"] + scores["rank_hist_2"] == pytest.approx(1.0)
    assert scores["rank_hist_1"] == pytest.approx(1.0)  # the observation lies between the two members
    # spread–skill ratio: error of the mean 0 → undefined
    assert scores["spread_skill_ratio"] is None


def test_masked_loss_averages_over_the_points_that_count():
    prediction, target = torch.tensor([1.0, 3.0, 100.0]), torch.tensor([0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, False])
    assert LOSSES.get("mse")(prediction, target, mask).item() == pytest.approx(5.0)
    assert LOSSES.get("mae")(prediction, target, mask).item() == pytest.approx(2.0)
    assert LOSSES.get("mse")(prediction, target).item() == pytest.approx(10010 / 3)
