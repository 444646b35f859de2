"""Score arithmetic shared by the evaluators: stateless tensor functions.

Each function either reduces a batch to additive sufficient statistics (int64 contingency counts, float64
sums) or turns accumulated statistics into scores. Keeping the two apart is what lets batches and DDP ranks
merge exactly: scores are never averaged, their ingredients are summed.

Conventions: a score whose denominator is 0 is NaN (no event to score), never 1 and never eps-padded;
fields are (..., H, W) with the spatial dims last.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

#: order of the last axis of contingency counts
CONTINGENCY_FIELDS = ("hits", "misses", "false_alarms", "correct_negatives")

#: C-Nino3.4-WM lead weights a_l (ICAR-ENSO / Earthformer, Gao et al. 2022, Sec. 5.2): 1.5 for leads 1–4,
#: 2 for leads 5–11, 3 for lead 12 (the Tianchi competition's 24-lead vector continues 3, 4; we score 12)
NINO_WM_LEAD_FACTORS = (1.5,) * 4 + (2.0,) * 7 + (3.0,)


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator in float64, NaN where the denominator is 0."""
    numerator = numerator.to(torch.float64)
    denominator = denominator.to(torch.float64)
    zero = denominator == 0
    ratio = numerator / torch.where(zero, torch.ones_like(denominator), denominator)
    return torch.where(zero, torch.full_like(ratio, math.nan), ratio)


def spatial_sum(values: torch.Tensor) -> torch.Tensor:
    """Σ over the last two (spatial) dims as float64. Rows are summed in the input precision first — a float64
    sum of every element is several times slower on CPU — so a float32 frame carries ≲1e-7 relative
    rounding before the float64 accumulation across frames, batches and ranks."""
    return values.sum(dim=-1).to(torch.float64).sum(dim=-1)


def error_sums(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """(…, 3) per frame: [Σ squared error / scale², Σ absolute error / scale, pixels], the sums behind MSE and
    MAE on the normalised scale. Scaled after summing: differences of integer-valued fields stay exact."""
    error = pred - target
    return torch.stack([spatial_sum(error**2) / scale**2, spatial_sum(error.abs()) / scale,
                        torch.full_like(error[..., 0, 0], error.shape[-2] * error.shape[-1], dtype=torch.float64)],
                       dim=-1)


def nanmean(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean over the finite entries along `dim`; NaN when none is finite."""
    finite = torch.isfinite(values)
    total = torch.where(finite, values, torch.zeros_like(values)).sum(dim=dim)
    return safe_divide(total, finite.sum(dim=dim))


# ------------------------------------------------------------------------------- contingency scores
def contingency_counts(pred: torch.Tensor, target: torch.Tensor, thresholds: list[float]) -> torch.Tensor:
    """(..., H, W) fields → (..., K, 4) int64 [hits, misses, false alarms, correct negatives]; event = value ≥ thr."""
    pixels = pred.shape[-2] * pred.shape[-1]
    # event masks are summed as float32 (several times faster than bool sums on CPU); every partial sum is an
    # integer below 2^24, hence exact, unless a frame has more pixels than that
    count_dtype = torch.float32 if pixels < 2**24 else torch.float64
    per_threshold = []
    for threshold in thresholds:
        forecast_event = _as_number(pred >= threshold, count_dtype).flatten(-2)
        observed_event = _as_number(target >= threshold, count_dtype).flatten(-2)
        hits = (forecast_event * observed_event).sum(dim=-1).to(torch.int64)
        misses = observed_event.sum(dim=-1).to(torch.int64) - hits
        false_alarms = forecast_event.sum(dim=-1).to(torch.int64) - hits
        correct_negatives = pixels - hits - misses - false_alarms
        per_threshold.append(torch.stack([hits, misses, false_alarms, correct_negatives], dim=-1))
    return torch.stack(per_threshold, dim=-2)


def _as_number(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask → 0/1 numbers; via a uint8 view, about twice as fast as a direct bool cast on CPU."""
    return mask.view(torch.uint8).to(dtype) if mask.dtype == torch.bool else mask.to(dtype)


def categorical_scores(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores from (..., 4) counts; each (...) float64, NaN where undefined."""
    hits, misses, false_alarms, correct_negatives = counts.to(torch.float64).unbind(dim=-1)
    # Heidke skill score, the standard 2×2 form: 2(ad − bc) / [(a+c)(c+d) + (a+b)(b+d)]
    # with a = hits, b = false alarms, c = misses, d = correct negatives
    hss_denominator = (hits + misses) * (misses + correct_negatives) + (hits + false_alarms) * (
        false_alarms + correct_negatives
    )
    return {
        "csi": safe_divide(hits, hits + misses + false_alarms),
        "pod": safe_divide(hits, hits + misses),
        "sucr": safe_divide(hits, hits + false_alarms),
        "far": safe_divide(false_alarms, hits + false_alarms),
        # frequency bias: forecast events over observed events (1 = unbiased)
        "frequency_bias": safe_divide(hits + false_alarms, hits + misses),
        "hss": safe_divide(2 * (hits * correct_negatives - misses * false_alarms), hss_denominator),
    }


def max_pool_ceil(fields: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping size×size max pooling of (..., H, W); a partial edge window is pooled over the pixels
    it has (ceil mode: H=5, size=4 gives 2 rows, the second the max of row 4 alone). Padding is −inf, so it
    never wins a max, and an image smaller than the window pools to one pixel."""
    height, width = fields.shape[-2:]
    flat = fields.reshape(-1, 1, height, width)
    if not flat.is_floating_point():
        flat = flat.float()
    pad_height, pad_width = (-height) % size, (-width) % size
    if pad_height or pad_width:
        flat = F.pad(flat, (0, pad_width, 0, pad_height), value=-math.inf)
    pooled = F.max_pool2d(flat, kernel_size=size, stride=size)
    return pooled.reshape(*fields.shape[:-2], *pooled.shape[-2:])


# ---------------------------------------------------------------------------- fractions skill score
def neighbourhood_counts(events: torch.Tensor, size: int) -> torch.Tensor:
    """Number of events in the size×size window around each pixel of (..., H, W) booleans, as float32.

    The window is centred ((size−1)//2 pixels before, the rest after, so even sizes lean right/down) and
    pixels outside the domain count as non-events (zero padding, as in Roberts & Lean 2008 applications).
    """
    return _window_counts_transposed(events, size).transpose(-1, -2)


def _window_counts_transposed(events: torch.Tensor, size: int) -> torch.Tensor:
    """`neighbourhood_counts` as a contiguous (..., W, H) tensor: running sums along rows, then along the
    columns of the transposed result, so both cumsums run over the contiguous last dim (several times
    faster on CPU than along dim −2). Sums over all pixels do not care about the orientation. Every value
    is an integer ≤ size·(H + size), exact in float32."""
    counts = _as_number(events, torch.float32)
    if size == 1:
        return counts.transpose(-1, -2)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    # a leading zero makes running[..., j + size] − running[..., j] the window sum for pixel j
    running = F.pad(counts, (before + 1, after)).cumsum(dim=-1)
    counts = running[..., size:] - running[..., :-size]
    running = F.pad(counts.transpose(-1, -2), (before + 1, after)).cumsum(dim=-1)
    return running[..., size:] - running[..., :-size]


def fss_sums(
    pred: torch.Tensor, target: torch.Tensor, thresholds: list[float], scales: list[int]
) -> torch.Tensor:
    """B×T×H×W fields → T×K×S×2 float64 [Σ(Pf−Po)², ΣPf² + ΣPo²] summed over samples and pixels.

    Fractions P = neighbourhood count / n²; the n⁴ common to both sums is left out (it cancels in
    FSS = 1 − first/second, Roberts & Lean 2008, Mon. Wea. Rev. 136:78), so the sums are integer-valued
    (up to spatial_sum's float32 row rounding).
    """
    n_leads = pred.shape[1]
    out = torch.zeros(n_leads, len(thresholds), len(scales), 2, dtype=torch.float64, device=pred.device)
    for k, threshold in enumerate(thresholds):
        forecast_event = pred >= threshold
        observed_event = target >= threshold
        for s, scale in enumerate(scales):
            forecast_count = _window_counts_transposed(forecast_event, scale)
            observed_count = _window_counts_transposed(observed_event, scale)
            difference = forecast_count - observed_count
            squared_difference = spatial_sum(difference * difference)
            reference = spatial_sum(forecast_count * forecast_count + observed_count * observed_count)
            out[:, k, s, 0] = squared_difference.sum(dim=0)
            out[:, k, s, 1] = reference.sum(dim=0)
    return out


def fss_from_sums(sums: torch.Tensor) -> torch.Tensor:
    """FSS from (..., 2) sums; NaN where neither field has an event (reference sum 0)."""
    return 1.0 - safe_divide(sums[..., 0], sums[..., 1])


# ------------------------------------------------------------------------------------------ ensembles
def crps_sums(members: torch.Tensor, obs: torch.Tensor, fair: bool) -> torch.Tensor:
    """B×M×T×H×W members, B×T×H×W obs → B×T CRPS summed over pixels (float64).

    Per pixel, with members x_1..x_M and observation y:
        CRPS = (1/M) Σ_i |x_i − y| − c · Σ_i Σ_j |x_i − x_j|,
    c = 1/(2M²) for the plain (empirical-distribution) estimator and 1/(2M(M−1)) for the fair one
    (Ferro 2014, QJRMS 140:1917), which is unbiased for the CRPS of the ensemble's parent distribution.
    Σ_i Σ_j |x_i − x_j| = 2 Σ_k (2k − M − 1) x_(k) over the sorted members x_(1) ≤ … ≤ x_(M).
    """
    n_members = members.shape[1]
    skill = (members - obs.unsqueeze(1)).abs().mean(dim=1)
    ordered = members.sort(dim=1).values
    rank_weight = 2 * torch.arange(1, n_members + 1, device=members.device, dtype=members.dtype) - n_members - 1
    pair_sum = 2 * (ordered * rank_weight.view(1, -1, *([1] * (members.ndim - 2)))).sum(dim=1)
    pairs = n_members * (n_members - 1) if fair else n_members * n_members
    crps = skill - pair_sum / (2 * pairs)
    return spatial_sum(crps)


def corrected_variance_sums(members: torch.Tensor) -> torch.Tensor:
    """B×T Σ over pixels of (M+1)/M × unbiased member variance (the spread a calibrated ensemble's
    mean-squared error matches; see ForecastEvaluator._probabilistic_scores)."""
    n_members = members.shape[1]
    variance = members.var(dim=1, unbiased=True)
    return spatial_sum(variance) * (n_members + 1) / n_members


def rank_histogram_counts(members: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """(M+1,) float64 counts of the observation's rank among the members, over all pixels.

    rank = number of members below the observation. Ties (common: VIL 0 everywhere) are shared out evenly
    over the ranks they allow — the expected histogram of random tie-breaking, without its randomness — so
    an observation tied with e members adds 1/(e+1) to each of ranks below … below+e.
    """
    n_members = members.shape[1]
    expanded_obs = obs.unsqueeze(1)
    below = (members < expanded_obs).sum(dim=1).flatten()
    tied = (members == expanded_obs).sum(dim=1).flatten()
    joint = torch.bincount(below * (n_members + 1) + tied, minlength=(n_members + 1) ** 2)
    spread = _tie_spreading_matrix(n_members).to(members.device)
    return joint.to(torch.float64) @ spread


@lru_cache(maxsize=8)
def _tie_spreading_matrix(n_members: int) -> torch.Tensor:
    """((M+1)², M+1): row (below, tied) holds 1/(tied+1) on ranks below … below+tied."""
    matrix = torch.zeros((n_members + 1) ** 2, n_members + 1, dtype=torch.float64)
    for below in range(n_members + 1):
        for tied in range(n_members + 1 - below):
            matrix[below * (n_members + 1) + tied, below : below + tied + 1] = 1.0 / (tied + 1)
    return matrix


# ----------------------------------------------------------------------------------------- correlation
#: order of the last axis of correlation moments
MOMENT_FIELDS = ("n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy", "sum_squared_error")


def moments(forecast: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per-sample (..., 7) float64 [1, x, y, x², y², xy, (x−y)²]; summing them over samples gives the
    sufficient statistics of Pearson correlation and RMSE."""
    x = forecast.to(torch.float64)
    y = observed.to(torch.float64)
    return torch.stack([torch.ones_like(x), x, y, x * x, y * y, x * y, (x - y) ** 2], dim=-1)


def pearson_from_moments(summed: torch.Tensor) -> torch.Tensor:
    """Pearson correlation from summed (..., 7) moments; NaN for < 2 samples or a constant series.

    Float64 sums of anomaly-scale values (|x| ~ 1, n ≲ 10⁶) keep the cancellation error near 1e-10.
    """
    n, sum_x, sum_y, sum_xx, sum_yy, sum_xy, _ = summed.to(torch.float64).unbind(dim=-1)
    safe_n = torch.where(n > 0, n, torch.ones_like(n))
    covariance = sum_xy - sum_x * sum_y / safe_n
    variance_x = sum_xx - sum_x**2 / safe_n
    variance_y = sum_yy - sum_y**2 / safe_n
    # a constant series leaves only rounding noise in its variance: treat it as exactly zero
    tolerance = 1e-12
    variance_x = torch.where(variance_x > tolerance * sum_xx, variance_x, torch.zeros_like(variance_x))
    variance_y = torch.where(variance_y > tolerance * sum_yy, variance_y, torch.zeros_like(variance_y))
    corr = safe_divide(covariance, torch.sqrt(variance_x * variance_y))
    return torch.where(n >= 2, corr, torch.full_like(corr, math.nan))


def rmse_from_moments(summed: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(safe_divide(summed[..., 6], summed[..., 0]))


def nino34_weighted_correlation(corr_by_lead: torch.Tensor) -> torch.Tensor:
    """C-Nino3.4-WM = (1/12) Σ_{l=1}^{12} a_l · ln(l) · corr_l; NaN unless leads 1–12 all have a correlation.

    Why the 1/12: the un-normalised sum has maximum Σ a_l ln l = 40.87, and with Earthformer's published
    C-Nino3.4-M = 0.7329 (Σ corr = 8.79, each corr in [−1, 1]) it cannot be below 20.2 (linear-programming
    minimum), far from the published WM = 2.259. With 1/12 the maximum is 3.406 and the published pairs imply weighted
    mean correlations of 0.663 (Earthformer), 0.619 (ConvLSTM) and 0.131 (persistence) against plain means
    0.733, 0.696, 0.322 — the expected ordering when skill decays with lead and weights grow with lead.
    """
    if corr_by_lead.shape[-1] < len(NINO_WM_LEAD_FACTORS):
        return torch.full(corr_by_lead.shape[:-1], math.nan, dtype=torch.float64, device=corr_by_lead.device)
    leads = torch.arange(1, len(NINO_WM_LEAD_FACTORS) + 1, dtype=torch.float64)
    weights = torch.tensor(NINO_WM_LEAD_FACTORS, dtype=torch.float64) * torch.log(leads)
    first_year = corr_by_lead[..., : len(NINO_WM_LEAD_FACTORS)].to(torch.float64)
    return (first_year * weights.to(first_year.device)).sum(dim=-1) / len(NINO_WM_LEAD_FACTORS)
