"""The terminal summary after train/eval: headline scores first, a task's own scores when it has none."""

from earthcast.tasks.commands import summary_keys


def test_headline_scores_are_shown_in_fixed_order():
    scores = {"mae": 0.1, "csi_m": 0.3, "persistence/csi_m": 0.2, "csi_16": 0.5}
    assert summary_keys(scores) == ["csi_m", "mae"]


def test_scores_without_headline_keys_are_listed_instead_of_an_empty_table():
    scores = {"align_mae_low_noise": 1.2, "anticipation_mae": 2.2, "persistence_mae": 3.0,
              "anticipation_sigma": None, "by_lead": [1, 2], "persistence/x": 0.1}
    assert summary_keys(scores) == ["align_mae_low_noise", "anticipation_mae", "anticipation_sigma",
                                    "persistence_mae"]
