"""The forecast card on a constructed case whose worst groups and limitations are known in advance."""

import numpy as np
import pytest
import torch

from earthcast.metrics import SevirEvaluator
from earthcast.metrics.card import card_lines, limitations, worst_rows
from earthcast.metrics.evaluation import Evaluation
from earthcast.metrics.protocol import run_protocol
from earthcast.metrics.published import published_comparison

BOOT = {"replicates": 200, "level": 0.95, "seed": 0}
#: the model's offset at leads 1–3 on Tornado events (Hail events are forecast exactly); persistence is off by 10
TORNADO_OFFSETS = (5.0, 20.0, 40.0)


def constructed(n_per_type=6) -> Evaluation:
    """Fields of 0 and 100. Persistence adds 10 everywhere. The model is exact on Hail events and adds 5, 20,
    40 at leads 1–3 on Tornado events, so its MSE by lead is 12.5, 200, 800 (·/255²) against persistence's 100:
    better at lead 1, worse at lead 2 (gap 100 %) and lead 3 (700 %); by group Tornado 675 (575 %), Hail 0, and
    the season of all events (JJA) 337.5 (237.5 %)."""
    n = 2 * n_per_type
    field = torch.zeros(4, 4)
    field[:2] = 100.0
    target = field.expand(n, 3, 4, 4).clone()
    context = (field + 10.0).expand(n, 2, 4, 4).clone()
    pred = target.clone()
    for lead, offset in enumerate(TORNADO_OFFSETS):
        pred[n_per_type:, lead] += offset
    meta = {"event_id": [f"S{i:02d}" for i in range(n)], "seq_start": torch.zeros(n, dtype=torch.int64),
            "event_type": ["Hail"] * n_per_type + ["Tornado"] * n_per_type,
            "time_utc": ["2019-07-01T00:00:00"] * n}
    evaluator = SevirEvaluator(thresholds=[16, 74], pool_sizes=[2], fss_thresholds=[], fss_scales=[],
                               frame_minutes=5, bootstrap=BOOT)
    evaluator.update(pred, target, context=context, meta=meta)
    results = evaluator.results()
    protocol = run_protocol(results["protocol"], dataset="sevir", split="test", nan_policy="fail", synthetic=True)
    return Evaluation("constructed", results["scores"], results["by_lead"], results["by_group"],
                      results["replicates"], protocol, {"name": "constructed"})


def scored(name: str, pred: torch.Tensor, target: torch.Tensor) -> Evaluation:
    """The evaluation of `pred` (a forecast or, with a member axis, an ensemble) against `target`, one event per
    sample, without persistence."""
    n = target.shape[0]
    evaluator = SevirEvaluator(thresholds=[16, 74], pool_sizes=[], fss_thresholds=[], fss_scales=[],
                               frame_minutes=5, reference=False, bootstrap=BOOT)
    evaluator.update(pred, target, meta={"event_id": [f"E{i}" for i in range(n)], "seq_start": torch.zeros(n)})
    results = evaluator.results()
    return Evaluation(name, results["scores"], results["by_lead"], results["by_group"], results["replicates"])


def test_worst_groups_are_listed_largest_gap_first():
    gaps = worst_rows(constructed())
    mse = gaps[gaps["score"] == "mse"]
    assert mse["where"].tolist() == ["lead 3 (15 min)", "event type Tornado", "season JJA", "lead 2 (10 min)"]
    assert mse["relative"].tolist() == pytest.approx([7.0, 5.75, 2.375, 1.0])
    assert mse["against"].unique().tolist() == ["persistence"]
    assert mse["difference"].iloc[0] == pytest.approx((800 - 100) / 255**2)
    # established at lead 3 and on Tornado events (worse on any resample with a Tornado event); at lead 2 the
    # model is worse only while Tornado events make up over a quarter of a resample, so its interval spans 0
    assert (mse["ci_low"].iloc[:2] > 0).all() and mse["ci_low"].iloc[3] < 0 < mse["ci_high"].iloc[3]
    # the model is never worse at lead 1, on Hail or in CSI at the 74 threshold (forecast exactly or above)
    assert not gaps["where"].isin(["lead 1 (5 min)", "event type Hail"]).any()
    assert set(gaps.loc[gaps["score"].str.startswith("csi"), "score"]) <= {"csi_m", "csi_16"}
    # the list is sorted by the relative gap, whatever the score
    assert gaps["relative"].is_monotonic_decreasing


def test_card_shows_intervals_worst_groups_and_limitations():
    evaluation = constructed()
    text = "\n".join(card_lines(evaluation, {"dataset": "sevir", "recipe": None}))
    for heading in ("## Model", "## Recipe", "## Data and protocol", "## Scores", "## By lead time",
                    "## By threshold (all leads)", "## By event type and season", "## Where it is worse than persistence",
                    "## Limitations"):
        assert heading in text, heading
    worst = text.split("## Where it is worse than persistence")[1].split("##")[0]
    first_row = next(line for line in worst.splitlines() if line.startswith("| lead") or line.startswith("| event"))
    assert first_row.startswith("| lead 3 (15 min) | mse | persistence |") and "| yes |" in first_row
    assert f"`{evaluation.protocol['fingerprint']}`" in text
    assert "synthetic twin" in text and "Not known here" in text
    # intervals appear beside the scores
    low, high = evaluation.interval("csi_m")
    assert f"[{low:.4g}, {high:.4g}]" in text


def test_limitations_are_stated_from_the_numbers():
    evaluation = constructed()
    statements = limitations(evaluation, worst_rows(evaluation), None)
    assert any(s.startswith("Scored on a synthetic twin") for s in statements)
    assert any(s.startswith("Worse than persistence — lead 3 (15 min), mse") for s in statements)
    assert any("Hail (n=6)" in s and "Tornado (n=6)" in s for s in statements)  # small groups flagged


def test_intensity_loss_is_stated_with_its_frequency_bias():
    """A model that halves intensities from lead 2 on never reaches the 74 threshold there: bias 0."""
    n = 8
    field = torch.zeros(4, 4)
    field[:2] = 100.0
    target = field.expand(n, 3, 4, 4).clone()
    pred = target.clone()
    pred[:, 1:] *= 0.5
    evaluation = scored("halving", pred, target)
    statements = limitations(evaluation, worst_rows(evaluation), None)
    assert "Loses intensity at ≥ 74 from 10 min on: frequency bias 0.00 at 10 min, 0.00 at 15 min." in statements


def test_published_values_are_put_beside_ours_with_coverage_and_protocol_differences():
    evaluation = constructed()
    comparison = published_comparison("earthformer_sevir", evaluation)
    assert comparison["citation"].startswith("Z. Gao, X. Shi") and "NeurIPS 2022" in comparison["citation"]
    rows = {(row["model"], row["score"]): row for row in comparison["rows"]}
    earthformer = rows[("earthformer", "csi_m")]
    assert earthformer["published"] == 0.4419 and earthformer["ours"] == evaluation.scores["csi_m"]
    low, high = evaluation.interval("csi_m")
    assert earthformer["covered"] == (low <= 0.4419 <= high)
    assert rows[("persistence", "mse")]["published"] == pytest.approx(11.5338e-3)
    assert rows[("earthformer", "csi_219")]["ours"] is None and rows[("earthformer", "csi_219")]["covered"] is None
    differences = "; ".join(comparison["protocol_differences"])
    assert "grid: ours [4, 4] vs paper [384, 384]" in differences and "synthetic: ours True vs paper False" in differences
    assert "thresholds: ours" in differences  # we scored 16 and 74 only
    assert not any(d.startswith("value_scale") for d in comparison["protocol_differences"])


def test_published_tables_hold_the_papers_numbers():
    """Each shipped value against the papers' tables (Earthformer, NeurIPS 2022; PreDiff, NeurIPS 2023)."""
    from earthcast.metrics.published import published_tables

    tables = published_tables()
    sevir = tables["earthformer_sevir"]["models"]
    assert sevir["earthformer"] == {"csi_m": 0.4419, "csi_219": 0.1791, "csi_181": 0.2848, "mse": 0.0036957}
    assert sevir["unet"]["mse"] == pytest.approx(4.1119e-3) and sevir["predrnn"]["csi_219"] == 0.1312
    enso = tables["earthformer_enso"]["models"]
    assert enso["earthformer"] == {"nino34_corr_m": 0.7329, "nino34_corr_wm": 2.259, "mse": 0.0002546}
    assert enso["persistence"]["mse"] == pytest.approx(4.581e-4)
    prediff = tables["prediff_sevirlr"]["models"]
    assert prediff["prediff"]["crps"] == 0.0246 and prediff["earthformer"]["csi_m_pool16"] == 0.5005
    for table in tables.values():
        for values in table["models"].values():
            assert all(isinstance(v, float) and np.isfinite(v) for v in values.values())


def test_card_of_an_ensemble_shows_its_calibration():
    """Members spread twice as wide as their error: over-dispersive, spread/skill well above 1."""
    g = torch.Generator().manual_seed(0)
    n, members = 10, 4
    target = torch.rand(n, 2, 6, 6, generator=g) * 200
    ensemble = target.unsqueeze(1) + torch.randn(n, members, 2, 6, 6, generator=g) * 30
    ensemble = ensemble - ensemble.mean(dim=1, keepdim=True) + target.unsqueeze(1) + 5  # the mean errs by 5
    evaluation = scored("ensemble", ensemble, target)
    text = "\n".join(card_lines(evaluation, {}))
    assert "## Ensemble calibration" in text and "rank_histogram.png" in text
    low, high = evaluation.interval("spread_skill_ratio")
    assert 1.2 < low <= evaluation.scores["spread_skill_ratio"] <= high
    assert any(s.startswith("The ensemble is over-dispersive") for s in limitations(evaluation, worst_rows(evaluation), None))


def test_card_of_an_enso_forecast_goes_by_initialisation_month():
    from earthcast.metrics import EnsoEvaluator

    g = torch.Generator().manual_seed(1)
    n = 36
    target = torch.randn(n, 14, 3, 5, generator=g)
    context = torch.randn(n, 2, 3, 5, generator=g)
    meta = {"lat": torch.tensor([-5.0, 0.0, 5.0]), "lon": torch.tensor([190.0, 200, 210, 220, 240]),
            "model": ["CMIP5_1"] * n, "seq_start": torch.arange(n) * 12, "init_month": torch.arange(n) % 12 + 1}
    evaluator = EnsoEvaluator(bootstrap=BOOT, max_leads=16)
    evaluator.update(target * 0.5 + 0.5 * torch.randn(target.shape, generator=g), target, context=context, meta=meta)
    results = evaluator.results()
    protocol = run_protocol(results["protocol"], dataset="enso", split="test", nan_policy="fail")
    evaluation = Evaluation("enso", results["scores"], results["by_lead"], results["by_group"],
                            results["replicates"], protocol)
    text = "\n".join(card_lines(evaluation, {}))
    assert "## By initialisation month" in text and "Δ vs climatology" in text and "nino34_corr_m" in text
    comparison = published_comparison("earthformer_enso", evaluation)
    assert {row["score"] for row in comparison["rows"]} == {"nino34_corr_m", "nino34_corr_wm", "mse"}
    assert not any(d.startswith(("running_mean_months", "lat_range", "lon_range", "lead_frames"))
                   for d in comparison["protocol_differences"])
