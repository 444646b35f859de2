"""SevirEvaluator against hand-computed cases, plus merging, grouping, ensembles and config errors."""

import itertools
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from earthcast.errors import UserError
from earthcast.metrics import EVALUATORS, SevirEvaluator, build_evaluator

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "evaluator"

# one sample, two leads, 2×3 pixels; lead 2 is empty in both fields
PRED = torch.tensor([[[20.0, 80, 0], [10, 100, 16]], [[0, 0, 0], [0, 0, 0]]]).unsqueeze(0)
TARGET = torch.tensor([[[30.0, 10, 0], [20, 74, 15]], [[0, 0, 0], [0, 0, 0]]]).unsqueeze(0)


def _small_evaluator(**options):
    settings = dict(thresholds=[16, 74], pool_sizes=[2], fss_thresholds=[16], fss_scales=[1, 3], frame_minutes=5)
    settings.update(options)
    return SevirEvaluator(**settings)


def test_hand_computed_scores():
    evaluator = _small_evaluator()
    evaluator.update(PRED, TARGET)
    metrics = evaluator.compute()
    # thr 16 (lead 1; lead 2 adds 6 correct negatives): H=2 M=1 F=2 C=7 → CSI 2/5, POD 2/3, SUCR 1/2,
    # FAR 1/2, bias 4/3, HSS 2(14−2)/(3·8 + 4·9) = 0.4
    # thr 74: H=1 M=0 F=1 C=10 → CSI 1/2, POD 1, SUCR 1/2, FAR 1/2, bias 2, HSS 20/32
    expected = {
        "csi_16": 0.4, "pod_16": 2 / 3, "sucr_16": 0.5, "far_16": 0.5, "frequency_bias_16": 4 / 3, "hss_16": 0.4,
        "csi_74": 0.5, "pod_74": 1.0, "sucr_74": 0.5, "far_74": 0.5, "frequency_bias_74": 2.0, "hss_74": 0.625,
        "csi_m": 0.45,  # (0.4 + 0.5)/2
        # 2×2 pooling of 2×3 (ceil mode): windows cols {0,1} and {2}. Lead 1 pred maxima 100, 16; target
        # 74, 15 → thr 16: H=1 F=1 (+2 CN from lead 2) → CSI 1/2; thr 74: H=1, rest CN → CSI 1
        "csi_16_pool2": 0.5, "csi_74_pool2": 1.0, "csi_m_pool2": 0.75,
        # FSS: worked out in test_metric_scores.test_fss_by_hand (lead 2 adds nothing to either sum)
        "fss_16_1": 4 / 7, "fss_16_3": 48 / 53,
        # errors pred − target on lead 1: −10 70 0 −10 26 1 → Σe² = 5777, Σ|e| = 117 over 12 pixels, /255
        "mse": 5777 / 12 / 255**2, "mae": 117 / 12 / 255,
        "crps": 117 / 12 / 255,  # a deterministic forecast's CRPS is its MAE
        "n_samples": 1,
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9), key
    assert isinstance(metrics["n_samples"], int)
    assert "spread_skill_ratio" not in metrics and "persistence/csi_m" not in metrics
    json.dumps(metrics)


def test_by_lead_table_and_undefined_leads():
    evaluator = _small_evaluator()
    evaluator.update(PRED, TARGET)
    by_lead = evaluator.compute_by_lead()
    assert by_lead["lead"].tolist() == [1, 2]
    assert by_lead["lead_minutes"].tolist() == [5, 10]
    assert by_lead.loc[0, "csi_m"] == pytest.approx(0.45)
    # lead 2 has no event at any threshold: every score is 0/0 → NaN, and CSI-M over no defined CSI is NaN
    for column in ("csi_m", "csi_16", "pod_74", "hss_16", "csi_m_pool2", "fss_16_3"):
        assert math.isnan(by_lead.loc[1, column]), column
    assert by_lead.loc[1, "mse"] == 0.0


def test_undefined_scores_become_none():
    evaluator = _small_evaluator()
    empty = torch.zeros(1, 2, 2, 3)
    evaluator.update(empty, empty)
    metrics = evaluator.compute()
    assert metrics["csi_m"] is None and metrics["hss_74"] is None and metrics["fss_16_3"] is None
    assert metrics["mse"] == 0.0
    assert json.loads(json.dumps(metrics))["csi_16"] is None


def test_channel_last_input_matches_plain():
    plain, channel_last = _small_evaluator(), _small_evaluator()
    plain.update(PRED, TARGET)
    channel_last.update(PRED.unsqueeze(-1), TARGET.unsqueeze(-1))
    assert plain.compute() == channel_last.compute()


def test_persistence_equals_scoring_the_repeated_last_frame():
    generator = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 8, 8, generator=generator) * 255
    pred = torch.rand(2, 3, 8, 8, generator=generator) * 255
    context = torch.rand(2, 4, 8, 8, generator=generator) * 255
    evaluator = _small_evaluator()
    evaluator.update(pred, target, context=context)
    direct = _small_evaluator()
    direct.update(context[:, -1:].expand_as(target), target)
    metrics, expected = evaluator.compute(), direct.compute()
    for key in ("csi_m", "csi_16", "hss_74", "csi_m_pool2", "fss_16_3", "mse", "mae", "n_samples"):
        assert metrics[f"persistence/{key}"] == pytest.approx(expected[key]), key
    assert "persistence/crps" not in metrics
    assert "persistence/csi_m" in evaluator.compute_by_lead()
    # reference off: no persistence even with a context
    off = _small_evaluator(reference=False)
    off.update(pred, target, context=context)
    assert not any(key.startswith("persistence/") for key in off.compute())


def test_groups_by_event_type():
    evaluator = _small_evaluator()
    pred = PRED.expand(4, -1, -1, -1)
    target = TARGET.expand(4, -1, -1, -1)
    evaluator.update(pred, target, meta={"event_type": ["Hail", None, "Dust Devil", " hail "]})
    by_group = evaluator.compute_by_group().set_index("group")
    # matching ignores case and surrounding spaces; missing → unlabeled; unlisted → other
    assert by_group["n_samples"].to_dict() == {"Hail": 2, "unlabeled": 1, "other": 1}
    assert by_group.loc["Hail", "csi_16"] == pytest.approx(0.4)
    assert by_group.loc["other", "mse"] == pytest.approx(5777 / 12 / 255**2)


def test_ensemble_mean_drives_deterministic_scores():
    # members 10 and 30 (mean 20 ≥ 16) where the target is 20: a hit for the ensemble mean
    members = torch.tensor([10.0, 30.0]).reshape(1, 2, 1, 1, 1)
    target = torch.tensor(20.0).reshape(1, 1, 1, 1)
    evaluator = SevirEvaluator(thresholds=[16], pool_sizes=[], fss_thresholds=[], fss_scales=[])
    evaluator.update(members, target)
    metrics = evaluator.compute()
    assert metrics["csi_16"] == 1.0
    assert metrics["mse"] == 0.0
    # CRPS on /255: mean |x − y| = 10; Σ_ij |x_i − x_j| = 40; fair: 10 − 40/(2·2·1) = 0 → 0
    assert metrics["crps"] == pytest.approx(0.0, abs=1e-12)
    # spread: unbiased var 200 × 3/2 = 300 against squared error 0 → undefined
    assert metrics["spread_skill_ratio"] is None
    # observation between the members: rank 1 of 0..2
    assert [metrics[f"rank_hist_{r}"] for r in range(3)] == [0.0, 1.0, 0.0]
    plain = SevirEvaluator(thresholds=[16], pool_sizes=[], fss_thresholds=[], crps_estimator="plain")
    plain.update(members, target)
    assert plain.compute()["crps"] == pytest.approx((10 - 40 / 8) / 255)


def test_spread_skill_by_hand():
    # members 0, 51, 153 (/255: 0, 0.2, 0.6), obs 76.5 (0.3): corrected variance 1.12/9 and squared error
    # of the mean (0.1/3)² = 0.01/9 (see test_metric_scores) → spread/skill = √112
    members = torch.tensor([0.0, 51.0, 153.0], dtype=torch.float64).reshape(1, 3, 1, 1, 1)
    target = torch.tensor(76.5, dtype=torch.float64).reshape(1, 1, 1, 1)
    evaluator = SevirEvaluator(thresholds=[16], pool_sizes=[], fss_thresholds=[])
    evaluator.update(members, target)
    metrics = evaluator.compute()
    assert metrics["spread_skill_ratio"] == pytest.approx(math.sqrt(112))
    assert metrics["crps"] == pytest.approx(1 / 30)  # fair CRPS of that case


def test_mean_intensity_error():
    pred = torch.tensor([[0.0, 51], [102, 51]]).reshape(1, 1, 2, 2)  # mean 51
    evaluator = SevirEvaluator(thresholds=[16], pool_sizes=[], fss_thresholds=[])
    evaluator.update(pred, torch.zeros_like(pred), meta={"target_mean_intensity": torch.tensor([102.0])})
    assert evaluator.compute()["mean_intensity_error"] == pytest.approx(51 / 255)  # |51 − 102| / 255 = 0.2


def _assert_same_results(merged, single):
    left, right = merged.compute(), single.compute()
    assert left.keys() == right.keys()
    for key in left:
        if right[key] is None:
            assert left[key] is None, key
        else:
            assert left[key] == pytest.approx(right[key], rel=1e-12, abs=1e-15), key
    pd.testing.assert_frame_equal(merged.compute_by_lead(), single.compute_by_lead(), rtol=1e-12)
    pd.testing.assert_frame_equal(merged.compute_by_group(), single.compute_by_group(), rtol=1e-12)


def test_merging_two_accumulators_equals_one_pass():
    """Simulated DDP: each 'rank' sees half the batches; merge_state applies the states' sum/max reductions."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        target = torch.rand(3, 4, 10, 9, generator=generator) ** 3 * 255
        members = (target.unsqueeze(1) + 60 * torch.randn(3, 4, 4, 10, 9, generator=generator)).clamp(0, 255)
        context = torch.rand(3, 2, 10, 9, generator=generator) * 255
        meta = {"event_type": ["Hail", "Tornado", None], "target_mean_intensity": torch.tensor([30.0, 40, 50])}
        batches.append((members, target, context, meta))
    single, rank0, rank1 = (build_evaluator(OmegaConf.load(CONFIGS / "sevir.yaml").evaluator) for _ in range(3))
    for index, (members, target, context, meta) in enumerate(batches):
        single.update(members, target, context=context, meta=meta)
        (rank0 if index % 2 == 0 else rank1).update(members, target, context=context, meta=meta)
    rank0.merge_state(rank1)
    _assert_same_results(rank0, single)
    assert single.compute()["persistence/n_samples"] == 12


def test_merge_with_an_idle_rank():
    single, busy, idle = (_small_evaluator() for _ in range(3))
    single.update(PRED, TARGET)
    busy.update(PRED, TARGET)
    busy.merge_state(idle)  # a rank that saw no batch contributes zeros
    _assert_same_results(busy, single)


def test_config_files_build_and_registry():
    assert {"sevir", "enso"} <= set(EVALUATORS.names())
    sevirlr = build_evaluator(OmegaConf.load(CONFIGS / "sevirlr.yaml").evaluator)
    assert isinstance(sevirlr, SevirEvaluator)
    assert sevirlr.frame_minutes == 10
    assert "Thunderstorm Wind" in sevirlr.groups


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"thresholds": [16]}, r"has no 'name' \(nor '_target_'\)"),
        ({"name": "radar"}, "unknown evaluator 'radar'"),
        ({"name": "sevir", "threshold": [16]}, "evaluator.threshold is not an option"),
        ({"name": "sevir", "thresholds": []}, "evaluator.thresholds is empty"),
        ({"name": "sevir", "thresholds": ["high"]}, "evaluator.thresholds must contain only numbers"),
        ({"name": "sevir", "pool_sizes": [1]}, "evaluator.pool_sizes must be integers ≥ 2"),
        ({"name": "sevir", "crps_estimator": "kernel"}, "evaluator.crps_estimator"),
        ({"name": "enso", "lat_range": [-5]}, "exactly two values"),
    ],
)
def test_config_errors_are_user_errors(cfg, message):
    with pytest.raises(UserError, match=message):
        build_evaluator(cfg)


def test_too_many_leads_is_a_user_error():
    evaluator = _small_evaluator(max_leads=1)
    with pytest.raises(UserError, match="evaluator.max_leads"):
        evaluator.update(PRED, TARGET)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="does not match"):
        _small_evaluator().update(PRED[:, :1], TARGET)


def test_ddp_sync_path_reduces_like_one_pass():
    """Drive torchmetrics' real sync (gather → stack → sum/max) with a fake two-rank all_gather."""
    generator = torch.Generator().manual_seed(7)
    batches = [
        (torch.rand(2, 3, 6, 5, generator=generator) * 255, torch.rand(2, 3, 6, 5, generator=generator) * 255)
        for _ in range(2)
    ]
    single, rank0, rank1 = (_small_evaluator() for _ in range(3))
    for index, (pred, target) in enumerate(batches):
        single.update(pred, target, context=target[:, :1], meta={"event_type": ["Hail", "Flood"]})
        (rank0, rank1)[index].update(pred, target, context=target[:, :1], meta={"event_type": ["Hail", "Flood"]})
    # every sync gathers the states in registration order; the fake rank 1 answers with its own
    other_rank_states = itertools.cycle([getattr(rank1, name) for name in rank0._reductions])

    def all_gather(tensor, group=None):
        return [tensor, next(other_rank_states)]

    rank0.dist_sync_fn = all_gather
    rank0.distributed_available_fn = lambda: True
    # compute(), compute_by_lead() and compute_by_group() each sync, score, and restore the local states
    _assert_same_results(rank0, single)
    assert int(rank0.sample_counts[0].sum()) == 2  # local again: the one batch of two samples it saw


def test_compute_before_any_update_is_empty_not_an_error():
    with pytest.warns(UserWarning, match="before the ``update``"):
        metrics = _small_evaluator().compute()
    assert metrics["n_samples"] == 0 and metrics["csi_m"] is None
    assert _small_evaluator().compute_by_lead().empty
