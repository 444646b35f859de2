"""Score arithmetic against hand-computed small cases (arithmetic in the comments)."""

import math

import numpy as np
import pytest
import torch

from earthcast.metrics import scores

nan = math.nan


def _close(actual, expected, rel=1e-9):
    actual = [float(v) for v in torch.as_tensor(actual).flatten()]
    expected = list(np.atleast_1d(expected))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        if math.isnan(e):
            assert math.isnan(a), (actual, expected)
        else:
            assert a == pytest.approx(e, rel=rel, abs=1e-12), (actual, expected)


# ------------------------------------------------------------------------------------------ contingency
PRED = torch.tensor([[20.0, 80, 0], [10, 100, 16]])
TARGET = torch.tensor([[30.0, 10, 0], [20, 74, 15]])


def test_contingency_counts_by_hand():
    counts = scores.contingency_counts(PRED, TARGET, [16, 74])
    # thr 16: forecast ≥16 at (0,0) (0,1) (1,1) (1,2); observed at (0,0) (1,0) (1,1)
    #   hits (0,0) (1,1) = 2, misses (1,0) = 1, false alarms (0,1) (1,2) = 2, correct negatives (0,2) = 1
    # thr 74: forecast 80, 100; observed 74 (the threshold itself is an event) → H 1, M 0, F 1, C 4
    assert counts.dtype == torch.int64
    assert counts.tolist() == [[2, 1, 2, 1], [1, 0, 1, 4]]


def test_categorical_scores_by_hand():
    # H=2, M=1, F=2, C=7: CSI 2/5, POD 2/3, SUCR 2/4, FAR 2/4, bias (2+2)/(2+1) = 4/3,
    # HSS = 2(2·7 − 1·2) / ((2+1)(1+7) + (2+2)(2+7)) = 24 / (24 + 36) = 0.4
    result = scores.categorical_scores(torch.tensor([2, 1, 2, 7]))
    _close(result["csi"], 0.4)
    _close(result["pod"], 2 / 3)
    _close(result["sucr"], 0.5)
    _close(result["far"], 0.5)
    _close(result["frequency_bias"], 4 / 3)
    _close(result["hss"], 0.4)
    # H=1, M=0, F=1, C=10: HSS = 2(1·10 − 0) / (1·10 + 2·11) = 20/32
    _close(scores.categorical_scores(torch.tensor([1, 0, 1, 10]))["hss"], 0.625)


def test_zero_denominators_are_nan_not_one():
    # nothing forecast, nothing observed: every score is 0/0
    none = scores.categorical_scores(torch.tensor([0, 0, 0, 12]))
    for name in ("csi", "pod", "sucr", "far", "frequency_bias", "hss"):
        _close(none[name], nan)
    # observed but never forecast: CSI 0/3, POD 0/3, bias 0/3; SUCR and FAR are 0/0
    missed = scores.categorical_scores(torch.tensor([0, 3, 0, 9]))
    _close(missed["csi"], 0.0)
    _close(missed["pod"], 0.0)
    _close(missed["frequency_bias"], 0.0)
    _close(missed["sucr"], nan)
    _close(missed["far"], nan)


def test_nanmean_skips_undefined_entries():
    _close(scores.nanmean(torch.tensor([0.4, nan, 0.5], dtype=torch.float64)), 0.45)
    _close(scores.nanmean(torch.tensor([nan, nan], dtype=torch.float64)), nan)


# ---------------------------------------------------------------------------------------------- pooling
def test_max_pool_partial_edge_windows():
    field = torch.arange(30, dtype=torch.float32).reshape(5, 6)  # value = 6·row + col
    pooled = scores.max_pool_ceil(field, 4)
    # rows {0..3} and {4}; cols {0..3} and {4,5}: maxima are at the windows' last row/col
    # (3,3) = 21, (3,5) = 23, (4,3) = 27, (4,5) = 29
    assert pooled.tolist() == [[21.0, 23.0], [27.0, 29.0]]


def test_max_pool_image_smaller_than_window_and_leading_dims():
    field = torch.tensor([[[[1.0, 7.0], [3.0, 2.0]]]])  # 1×1×2×2
    assert scores.max_pool_ceil(field, 16).tolist() == [[[[7.0]]]]
    assert scores.max_pool_ceil(torch.tensor([[-5.0, -9.0]]), 4).tolist() == [[-5.0]]  # −inf padding never wins


# -------------------------------------------------------------------------------------------------- FSS
def test_fss_by_hand():
    forecast = PRED.reshape(1, 1, 2, 3)
    observed = TARGET.reshape(1, 1, 2, 3)
    sums = scores.fss_sums(forecast, observed, [16], [1, 3])
    # scale 1: FSS = 1 − (M+F)/((H+F)+(H+M)) = 1 − 3/(4+3) = 4/7
    _close(scores.fss_from_sums(sums[0, 0, 0]), 4 / 7)
    # scale 3 (zero padding): both rows are always in the window; column sums of the event fields are
    # forecast [1, 2, 1], observed [2, 1, 0]; window cols {0,1}, {0,1,2}, {1,2} give counts
    # forecast [3, 4, 3], observed [3, 3, 1] on both rows:
    # Σ(cf−co)² = 2·(0 + 1 + 4) = 10; Σcf² + Σco² = 2·34 + 2·19 = 106 → FSS = 1 − 10/106 = 48/53
    _close(sums[0, 0, 1], [10, 106])
    _close(scores.fss_from_sums(sums[0, 0, 1]), 48 / 53)


def test_fss_without_events_is_nan():
    zeros = torch.zeros(1, 1, 3, 3)
    _close(scores.fss_from_sums(scores.fss_sums(zeros, zeros, [16], [3])[0, 0, 0]), nan)


def test_neighbourhood_counts_match_brute_force():
    events = torch.rand(2, 7, 5, generator=torch.Generator().manual_seed(1)) > 0.6
    for size in (1, 2, 3, 4, 9):
        before = (size - 1) // 2
        expected = torch.zeros(2, 7, 5, dtype=torch.int64)
        for i in range(7):
            for j in range(5):
                rows = slice(max(i - before, 0), max(i - before + size, 0))
                cols = slice(max(j - before, 0), max(j - before + size, 0))
                expected[:, i, j] = events[:, rows, cols].sum(dim=(-2, -1))
        assert torch.equal(scores.neighbourhood_counts(events, size).to(torch.int64), expected), size


# -------------------------------------------------------------------------------------------- ensembles
def _one_pixel_members(values):
    return torch.tensor(values, dtype=torch.float64).reshape(1, -1, 1, 1, 1)


def _one_pixel(value):
    return torch.tensor(value, dtype=torch.float64).reshape(1, 1, 1, 1)


def test_crps_fair_and_plain_three_members():
    members, obs = _one_pixel_members([0.0, 0.2, 0.6]), _one_pixel(0.3)
    # mean |x − y| = (0.3 + 0.1 + 0.3)/3 = 0.7/3; Σ_ij |x_i − x_j| = 2·(0.2 + 0.6 + 0.4) = 2.4
    # plain: 0.7/3 − 2.4/(2·3²) = 0.1; fair: 0.7/3 − 2.4/(2·3·2) = 0.7/3 − 0.2 = 1/30
    _close(scores.crps_sums(members, obs, fair=False), 0.1)
    _close(scores.crps_sums(members, obs, fair=True), 1 / 30)


def test_crps_two_members():
    members, obs = _one_pixel_members([1.0, 3.0]), _one_pixel(2.0)
    # mean |x − y| = 1; Σ_ij |x_i − x_j| = 4; plain 1 − 4/8 = 0.5; fair 1 − 4/4 = 0
    _close(scores.crps_sums(members, obs, fair=False), 0.5)
    _close(scores.crps_sums(members, obs, fair=True), 0.0)


def test_corrected_variance_by_hand():
    # members 0, 0.2, 0.6: mean 0.8/3; Σ deviation² = 0.56/3; unbiased variance 0.28/3; × (3+1)/3 = 1.12/9
    _close(scores.corrected_variance_sums(_one_pixel_members([0.0, 0.2, 0.6])), 1.12 / 9)


def test_rank_histogram_shares_ties():
    # pixels (members → obs): [1,3]→2 rank 1; [0,0]→0 tied with both: 1/3 to ranks 0,1,2;
    # [1,2]→5 rank 2; [2,4]→2 tied with one: 1/2 to ranks 0,1
    members = torch.tensor([[1.0, 3], [0, 0], [1, 2], [2, 4]]).T.reshape(1, 2, 1, 2, 2)
    obs = torch.tensor([2.0, 0, 5, 2]).reshape(1, 1, 2, 2)
    # rank 0: 1/3 + 1/2 = 5/6; rank 1: 1 + 1/3 + 1/2 = 11/6; rank 2: 1/3 + 1 = 4/3 (sum 4 pixels)
    _close(scores.rank_histogram_counts(members, obs), [5 / 6, 11 / 6, 4 / 3])


# ------------------------------------------------------------------------------------------ correlation
def test_pearson_and_rmse_from_moments():
    x = torch.tensor([1.0, 2, 3])
    y = torch.tensor([1.0, 3, 2])
    summed = scores.moments(x, y).sum(dim=0)
    # deviations x: −1 0 1, y: −1 1 0 → cov 1, var_x 2, var_y 2 → corr 0.5; errors 0, −1, 1 → RMSE √(2/3)
    _close(scores.pearson_from_moments(summed), 0.5)
    _close(scores.rmse_from_moments(summed), math.sqrt(2 / 3))
    constant = scores.moments(torch.full((3,), 0.1), y).sum(dim=0)
    _close(scores.pearson_from_moments(constant), nan)
    _close(scores.pearson_from_moments(scores.moments(x[:1], y[:1]).sum(dim=0)), nan)


def test_weighted_nino_correlation_by_hand():
    # all correlations 1: (1/12)·[1.5(ln1+ln2+ln3+ln4) + 2(ln5+…+ln11) + 3 ln12] = 40.8703/12 = 3.40586
    _close(scores.nino34_weighted_correlation(torch.ones(12, dtype=torch.float64)), 3.405859060494817)
    # only lead 2 correlated: 1.5·ln 2 / 12; lead 1 has weight ln 1 = 0
    lead2 = torch.zeros(12, dtype=torch.float64)
    lead2[1] = 1.0
    _close(scores.nino34_weighted_correlation(lead2), 1.5 * math.log(2) / 12)
    lead1 = torch.zeros(14, dtype=torch.float64)
    lead1[0], lead1[12] = 1.0, 1.0  # lead 1 weighs nothing; leads beyond 12 are not scored
    _close(scores.nino34_weighted_correlation(lead1), 0.0)
    _close(scores.nino34_weighted_correlation(torch.ones(11, dtype=torch.float64)), nan)


def test_weighted_nino_scale_is_consistent_with_published_numbers():
    """With the 1/12, Earthformer's (M, WM) = (0.7329, 2.259) is reached by a plausible decaying correlation
    curve; without it WM would have to be ≥ 20 for that M (see scores.nino34_weighted_correlation)."""
    leads = torch.arange(12, dtype=torch.float64)
    # linear decay c_l = M + b·(5.5 − l) keeps the mean at M; WM is linear in b: solve WM(b) = 2.259
    mean = 0.7329
    wm_flat = float(scores.nino34_weighted_correlation(torch.full((12,), mean, dtype=torch.float64)))
    wm_slope = float(scores.nino34_weighted_correlation(5.5 - leads))
    slope = (2.259 - wm_flat) / wm_slope
    curve = mean + slope * (5.5 - leads)
    assert 0 < slope < 0.1  # decays with lead, by a few hundredths per month
    assert float(curve.max()) <= 1.0 and float(curve.min()) >= -1.0
    # persistence (0.3221, 0.447) likewise: a steeper decay, still valid correlations
    wm_flat = float(scores.nino34_weighted_correlation(torch.full((12,), 0.3221, dtype=torch.float64)))
    slope = (0.447 - wm_flat) / wm_slope
    assert 0 < slope and float((0.3221 + slope * (5.5 - leads)).abs().max()) <= 1.0


def test_scores_stored_under_their_old_names_read_as_today():
    from earthcast.metrics.base import current_score_name

    assert current_score_name("bias_16") == "frequency_bias_16"
    assert current_score_name("persistence/spread_skill") == "persistence/spread_skill_ratio"
    assert current_score_name("spread_skill_ratio") == "spread_skill_ratio"
    assert current_score_name("frequency_bias_74") == "frequency_bias_74" and current_score_name("mse") == "mse"
