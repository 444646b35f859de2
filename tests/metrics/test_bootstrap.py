"""The event bootstrap on hand-made cases with known answers: weights, replicate statistics, paired intervals,
merging across ranks in any order, resampling whole events, and flat memory."""

import math
import random

import numpy as np
import pytest
import torch

from earthcast.errors import UserError
from earthcast.metrics import EnsoEvaluator, SevirEvaluator
from earthcast.metrics.bootstrap import (
    BootstrapSettings,
    count_units,
    percentile_interval,
    replicate_weights,
    unit_bit,
    unit_weights,
)
from earthcast.metrics.evaluation import Evaluation, excludes_zero

BOOT = {"replicates": 400, "level": 0.9, "seed": 3}


def _evaluator(**options):
    settings = dict(thresholds=[16, 74], pool_sizes=[2], fss_thresholds=[], fss_scales=[], frame_minutes=5,
                    bootstrap=BOOT)
    settings.update(options)
    return SevirEvaluator(**settings)


def _events(n_events, seed=0, per_event=1):
    """Random VIL fields for n_events × per_event samples (1 lead context, 2 leads), with ids and starts."""
    g = torch.Generator().manual_seed(seed)
    n = n_events * per_event
    target = torch.rand(n, 2, 6, 6, generator=g) * 200
    context = torch.rand(n, 1, 6, 6, generator=g) * 200
    meta = {"event_id": [f"S{i // per_event:03d}" for i in range(n)],
            "seq_start": torch.tensor([12 * (i % per_event) for i in range(n)]),
            "event_type": ["Hail"] * n}
    return target, context, meta


def _evaluation(evaluator) -> Evaluation:
    results = evaluator.results()
    return Evaluation("model", results["scores"], results["by_lead"], results["by_group"], results["replicates"],
                      {"protocol": "same"})


def test_weights_are_poisson_one_and_a_function_of_the_unit_alone():
    settings = BootstrapSettings(**{**BOOT, "replicates": 20000})
    weights = unit_weights("S123", settings.replicates, settings.seed)
    assert weights.mean() == pytest.approx(1.0, abs=0.03) and weights.var() == pytest.approx(1.0, abs=0.05)
    assert (weights == 0).mean() == pytest.approx(math.exp(-1), abs=0.01)
    batch = replicate_weights(["S1", "S2", "S1"], settings)
    assert batch.shape == (20000, 3) and torch.equal(batch[:, 0], batch[:, 2])
    assert not torch.equal(batch[:, 0], batch[:, 1])
    assert not np.array_equal(unit_weights("S1", 50, 0), unit_weights("S1", 50, 1))  # the seed matters


def test_replicates_are_the_weighted_statistics_by_hand():
    """Every sample's squared error is one constant per event, so replicate b's MSE is Σ w_b e / Σ w_b."""
    errors = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0]
    target = torch.zeros(len(errors), 2, 4, 4)
    pred = torch.stack([torch.full((2, 4, 4), e) for e in errors])
    meta = {"event_id": [f"E{i}" for i in range(len(errors))], "seq_start": torch.zeros(len(errors))}
    evaluator = _evaluator(reference=False)
    evaluator.update(pred, target, meta=meta)
    replicates = evaluator.results()["replicates"]
    w = np.stack([unit_weights(f"E{i}", BOOT["replicates"], BOOT["seed"]) for i in range(len(errors))], axis=1)
    squared = np.array(errors) ** 2 / 255**2
    with np.errstate(invalid="ignore"):
        expected = (w @ squared) / w.sum(axis=1)
    assert np.allclose(replicates.values("all", "mse"), expected, rtol=1e-12, equal_nan=True)
    low, high = percentile_interval(expected.reshape(-1, 1), BOOT["level"])
    assert _evaluation(evaluator).interval("mse") == pytest.approx([low[0], high[0]])
    assert evaluator.results()["scores"]["mse"] == pytest.approx(squared.mean())


def test_identical_forecasts_have_a_zero_width_paired_interval():
    target, context, meta = _events(12)
    persistence = context[:, -1:].expand_as(target)
    evaluator = _evaluator()
    evaluator.update(persistence.clone(), target, context=context, meta=meta)
    evaluation = _evaluation(evaluator)
    for key, pair in evaluation.reference_differences()["persistence"].items():
        if pair["difference"] is not None:
            assert pair["difference"] == 0 and pair["interval"] == [0.0, 0.0], key
    # the same forecast scored by another evaluator (another run) pairs with this one: zero width again
    again = _evaluator()
    again.update(persistence.clone(), target, context=context, meta=meta)
    pairs = evaluation.differences_to(_evaluation(again))
    assert pairs["csi_m"] == {"difference": 0.0, "interval": [0.0, 0.0]}
    assert pairs["mse"] == {"difference": 0.0, "interval": [0.0, 0.0]}


def test_a_forecast_better_on_every_event_has_an_interval_excluding_zero():
    target, context, meta = _events(20, seed=1)
    g = torch.Generator().manual_seed(7)
    persistence = context[:, -1:].expand_as(target)
    good = target + torch.randn(target.shape, generator=g) * 5  # much closer than the unrelated last frame
    per_event = ((good - target) ** 2).mean(dim=(1, 2, 3)) < ((persistence - target) ** 2).mean(dim=(1, 2, 3))
    assert per_event.all()  # the case: better on every event
    evaluator = _evaluator()
    evaluator.update(good, target, context=context, meta=meta)
    pairs = _evaluation(evaluator).reference_differences()["persistence"]
    assert pairs["mse"]["interval"][1] < 0 and pairs["csi_m"]["interval"][0] > 0
    assert excludes_zero(pairs["mse"]["interval"]) and excludes_zero(pairs["csi_m"]["interval"])
    # the plain intervals are about the same score: the point estimate lies inside
    evaluation = _evaluation(evaluator)
    low, high = evaluation.interval("csi_m")
    assert low <= evaluation.scores["csi_m"] <= high


def test_any_batching_order_and_rank_split_gives_the_same_replicates():
    target, context, meta = _events(9, seed=2, per_event=2)
    pred = target.flip(-1)
    one_pass = _evaluator()
    one_pass.update(pred, target, context=context, meta=meta)
    order = list(range(len(target)))
    random.Random(0).shuffle(order)
    ranks = [_evaluator(), _evaluator()]
    for rank, chunk in enumerate((order[:7], order[7:])):
        for start in range(0, len(chunk), 3):
            idx = chunk[start:start + 3]
            sub_meta = {"event_id": [meta["event_id"][i] for i in idx], "seq_start": meta["seq_start"][idx],
                        "event_type": [meta["event_type"][i] for i in idx]}
            ranks[rank].update(pred[idx], target[idx], context=context[idx], meta=sub_meta)
    ranks[0].merge_state(ranks[1])
    merged, single = ranks[0].results(), one_pass.results()
    assert merged["protocol"] == single["protocol"]
    for table in ("all", "by_lead", "by_group"):
        assert np.allclose(merged["replicates"].data[table].values, single["replicates"].data[table].values,
                           rtol=1e-12, equal_nan=True), table


def test_sequences_of_one_event_are_resampled_together():
    """Each event's two sequences carry its weight: replicate b's MSE is Σ_e w_be (ε_e1 + ε_e2) / Σ_e 2 w_be."""
    errors = torch.arange(12, dtype=torch.float64).reshape(6, 2)  # per event, per sequence
    target = torch.zeros(12, 2, 4, 4)
    pred = errors.reshape(12, 1, 1, 1).expand(12, 2, 4, 4).float()
    meta = {"event_id": [f"S{i // 2:03d}" for i in range(12)], "seq_start": torch.tensor([0, 12] * 6)}
    evaluator = _evaluator(reference=False)
    evaluator.update(pred, target, meta=meta)
    assert evaluator.units_total() == 6 and evaluator.protocol_facts()["n_samples"] == 12
    assert evaluator.compute_by_group()["n_units"].tolist() == [6]
    w = np.stack([unit_weights(f"S{i:03d}", BOOT["replicates"], BOOT["seed"]) for i in range(6)], axis=1)
    per_event = (errors.numpy() ** 2).sum(axis=1) / 255**2
    with np.errstate(invalid="ignore"):
        expected = (w @ per_event) / (2 * w.sum(axis=1))
    replicates = evaluator.results()["replicates"].values("all", "mse")
    assert np.allclose(replicates, expected, rtol=1e-12, equal_nan=True)


def test_too_few_events_give_no_interval():
    target, context, meta = _events(3, seed=4, per_event=4)  # 12 samples but only 3 events
    evaluator = _evaluator()
    evaluator.update(target.flip(-2), target, context=context, meta=meta)
    evaluation = _evaluation(evaluator)
    assert evaluation.interval("csi_m") == [None, None]
    assert evaluation.reference_differences()["persistence"]["csi_m"]["interval"] == [None, None]


def test_groups_with_few_events_get_no_interval_but_the_others_do():
    target, context, meta = _events(8, seed=5)
    meta["event_type"] = ["Hail"] * 6 + ["Tornado"] * 2
    evaluator = _evaluator()
    evaluator.update(target.flip(-1), target, context=context, meta=meta)
    replicates = evaluator.results()["replicates"]
    by_group = dict(zip(replicates.rows("by_group"), replicates.values("by_group", "csi_m").T))
    assert np.isfinite(by_group["Hail"]).any() and np.isnan(by_group["Tornado"]).all()


def test_enso_replicates_pair_with_persistence():
    g = torch.Generator().manual_seed(0)
    n, months = 24, 14
    target = torch.randn(n, months, 3, 5, generator=g)
    context = torch.randn(n, 2, 3, 5, generator=g)
    meta = {"lat": torch.tensor([-5.0, 0.0, 5.0]), "lon": torch.tensor([190.0, 200, 210, 220, 240]),
            "model": [f"CMIP5_{i % 3}" for i in range(n)], "seq_start": torch.tensor([12 * (i // 3) for i in range(n)]),
            "init_month": torch.tensor([i % 12 + 1 for i in range(n)])}
    evaluator = EnsoEvaluator(bootstrap=BOOT, max_leads=16)
    evaluator.update(context[:, -1:].expand_as(target).clone(), target, context=context, meta=meta)
    evaluation = _evaluation(evaluator)
    pairs = evaluation.reference_differences()["persistence"]
    assert pairs["nino34_corr_m"]["interval"] == [0.0, 0.0] and pairs["mse"]["interval"] == [0.0, 0.0]
    assert evaluator.units_total() == 24  # 3 models × 8 years
    low, high = evaluation.interval("nino34_corr_m")
    assert low < evaluation.scores["nino34_corr_m"] < high
    assert evaluation.replicates.values("by_lead", "nino34_corr").shape == (BOOT["replicates"], months)


def test_no_bootstrap_no_replicates_and_memory_does_not_grow():
    target, context, meta = _events(4)
    plain = _evaluator(bootstrap=None)
    plain.update(target, target, context=context, meta=meta)
    assert plain.results()["replicates"] is None
    assert not [name for name in plain._defaults if name.startswith("replicate_")]
    evaluator = _evaluator()
    size = sum(getattr(evaluator, name).numel() for name in evaluator._defaults)
    for seed in range(5):
        target, context, meta = _events(4, seed=seed)
        evaluator.update(target, target, context=context, meta=meta)
    assert sum(getattr(evaluator, name).numel() for name in evaluator._defaults) == size


def test_unit_counting_is_exact_for_small_counts():
    bitmap = torch.zeros(2, 4096, dtype=torch.uint8)
    for i in range(40):
        bitmap[0, unit_bit(f"E{i}")] = 1
    assert count_units(bitmap).tolist() == [40, 0]


@pytest.mark.parametrize("settings,fragment", [
    ({"replicates": 5, "level": 0.95, "seed": 0}, "too few"),
    ({"replicates": -1, "level": 0.95, "seed": 0}, "integer ≥ 0"),
    ({"replicates": 100, "level": 95, "seed": 0}, "bootstrap.level"),
    ({"replicates": 100, "level": 0.95, "seed": 0, "blocks": 3}, "bootstrap.blocks"),
])
def test_bad_settings_are_one_line_errors(settings, fragment):
    with pytest.raises(UserError, match=fragment):
        BootstrapSettings.from_config(settings)


def test_gridded_forecasts_resample_initialisation_days_with_masked_points():
    from earthcast.metrics.gridded import GriddedEvaluator

    g = torch.Generator().manual_seed(4)
    n = 12
    target = torch.randn(n, 2, 4, 4, generator=g)
    target[:, :, 0, 0] = float("nan")  # a land point
    context = torch.randn(n, 1, 4, 4, generator=g)
    times = [f"2020-01-{1 + i // 2:02d}T{12 * (i % 2):02d}:00:00" for i in range(n)]  # two inits a day
    evaluator = GriddedEvaluator(thresholds=[0.5], bootstrap=BOOT)
    evaluator.update(context[:, -1:].expand_as(target).clone(), target, context=context, meta={"init_time": times})
    evaluation = _evaluation(evaluator)
    assert evaluator.units_total() == 6 and evaluator.protocol_facts()["sample_ids"] == "init_time"
    pairs = evaluation.reference_differences()["persistence"]
    assert pairs["rmse"]["interval"] == [0.0, 0.0] and pairs["csi_m"]["interval"] == [0.0, 0.0]
    low, high = evaluation.interval("mse")
    assert low < evaluation.scores["mse"] < high
