"""Niño 3.4 index and EnsoEvaluator against hand-computed cases."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from omegaconf import OmegaConf

from earthcast.errors import UserError
from earthcast.metrics import EnsoEvaluator, build_evaluator, nino34_index

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "evaluator"

# descending latitudes; the box holds lat 5, 0, −5 and lon 190, 215, 240 (0–360 convention)
LAT = np.array([10.0, 5.0, 0.0, -5.0, -10.0])
LON_EAST = np.array([185.0, 190.0, 215.0, 240.0, 245.0])
LON_SIGNED = LON_EAST - 360.0  # −175 −170 −145 −120 −115: the same points in −180–180
IN_BOX = np.zeros((5, 5), dtype=bool)
IN_BOX[1:4, 1:4] = True


def _sst(box_values_by_month, outside=100.0, lon=LON_EAST):
    """time × lat × lon field: `outside` everywhere except the box, which holds the month's value."""
    months = len(box_values_by_month)
    data = np.full((months, 5, 5), outside)
    for t, value in enumerate(box_values_by_month):
        data[t][IN_BOX] = value
    return xr.DataArray(data, dims=("time", "lat", "lon"), coords={"time": np.arange(months), "lat": LAT, "lon": lon})


def test_nino34_index_box_selection_and_running_mean():
    sst = _sst([1.0, 2.0, 3.0, 4.0, 5.0])
    index = nino34_index(sst)
    # box means 1..5 (the 100s outside must not leak in); forward 3-month means: (1+2+3)/3, (2+3+4)/3, …
    assert index.values.tolist() == pytest.approx([2.0, 3.0, 4.0])
    assert index["time"].values.tolist() == [0, 1, 2]  # labelled with each window's first month
    signed = nino34_index(_sst([1.0, 2.0, 3.0, 4.0, 5.0], lon=LON_SIGNED))
    assert signed.values.tolist() == pytest.approx([2.0, 3.0, 4.0])
    ascending = nino34_index(sst.isel(lat=slice(None, None, -1)))
    assert ascending.values.tolist() == pytest.approx([2.0, 3.0, 4.0])
    assert nino34_index(sst, running_mean_months=1).values.tolist() == pytest.approx([1, 2, 3, 4, 5])


def test_nino34_index_cos_latitude_weighting():
    data = np.full((1, 5, 5), 100.0)
    data[0, 1, 1:4], data[0, 2, 1:4], data[0, 3, 1:4] = 3.0, 0.0, 6.0  # lat 5 → 3, lat 0 → 0, lat −5 → 6
    sst = xr.DataArray(data, dims=("time", "lat", "lon"), coords={"lat": LAT, "lon": LON_EAST})
    plain = nino34_index(sst, running_mean_months=1)
    weighted = nino34_index(sst, running_mean_months=1, cos_lat_weight=True)
    # plain: (3 + 0 + 6)/3 = 3; weighted: (3·cos5° + 0·1 + 6·cos5°) / (2·cos5° + 1)
    cos5 = math.cos(math.radians(5))
    assert float(plain[0]) == pytest.approx(3.0)
    assert float(weighted[0]) == pytest.approx(9 * cos5 / (2 * cos5 + 1))


def test_nino34_index_errors():
    sst = _sst([1.0, 2.0, 3.0])
    with pytest.raises(UserError, match="no 'lat' coordinate"):
        nino34_index(sst.drop_vars("lat"))
    with pytest.raises(UserError, match="no grid point inside the Niño 3.4 box"):
        nino34_index(sst.assign_coords(lon=LON_EAST - 100))
    with pytest.raises(UserError, match="shorter than the 3-month"):
        nino34_index(sst.isel(time=slice(0, 2)))


def _field(box_values, outside=100.0):
    """B × T × 5 × 5 tensor from per-sample, per-month box values."""
    values = torch.as_tensor(box_values, dtype=torch.float64)
    field = torch.full((*values.shape, 5, 5), outside, dtype=torch.float64)
    field[..., torch.as_tensor(IN_BOX)] = values.unsqueeze(-1)
    return field


def _meta(n_samples, months=(1, 1, 7)):
    return {"lat": torch.tensor(LAT), "lon": torch.tensor(LON_SIGNED), "init_month": torch.as_tensor(months[:n_samples])}


def test_hand_computed_enso_scores():
    # running_mean_months 1 so index = box value: lead 1 forecast [1, 2, 3] vs observed [1, 3, 2];
    # lead 2 forecast [0, 1, 2] vs observed [2, 1, 0]
    pred = _field([[1, 0], [2, 1], [3, 2]])
    target = _field([[1, 2], [3, 1], [2, 0]])
    context = _field([[9, 1], [9, 2], [9, 2]])  # last month [1, 2, 2] is the persistence forecast
    evaluator = EnsoEvaluator(running_mean_months=1, sst_scale=2.0)
    evaluator.update(pred, target, context=context, meta=_meta(3))
    metrics = evaluator.compute()
    # lead 1: deviations x −1 0 1, y −1 1 0 → corr 1/2; lead 2: corr −1 → C-Nino3.4-M = (0.5 − 1)/2
    assert metrics["nino34_corr_lead1"] == pytest.approx(0.5)
    assert metrics["nino34_corr_lead2"] == pytest.approx(-1.0)
    assert metrics["nino34_corr_m"] == pytest.approx(-0.25)
    assert metrics["nino34_corr_wm"] is None  # needs all 12 leads
    # RMSE lead 1: errors 0 −1 1 → √(2/3); lead 2: −2 0 2 → √(8/3); headline = their mean
    assert metrics["nino34_rmse"] == pytest.approx((math.sqrt(2 / 3) + math.sqrt(8 / 3)) / 2)
    # SST errors only in the 9 box cells of 25: Σe² = 9·(0+1+1+4+0+4) = 90 over 3·2·25 = 150 cells → 0.6 °C²,
    # / 2² = 0.15; Σ|e| = 9·(0+1+1+2+0+2) = 54 → 0.36 °C, / 2 = 0.18
    assert metrics["mse"] == pytest.approx(0.15)
    assert metrics["mae"] == pytest.approx(0.18)
    # persistence [1, 2, 2]: deviations −2/3 1/3 1/3; lead 1 cov 1, var 2/3 and 2 → √3/2; lead 2 −√3/2
    assert metrics["persistence/nino34_corr_lead1"] == pytest.approx(math.sqrt(3) / 2)
    assert metrics["persistence/nino34_corr_lead2"] == pytest.approx(-math.sqrt(3) / 2)
    assert metrics["persistence/nino34_corr_m"] == pytest.approx(0.0, abs=1e-12)
    # climatology (zero anomaly): RMSE lead 1 √((1+9+4)/3), lead 2 √((4+1+0)/3); no correlation reported
    assert metrics["climatology/nino34_rmse"] == pytest.approx((math.sqrt(14 / 3) + math.sqrt(5 / 3)) / 2)
    assert "climatology/nino34_corr_m" not in metrics
    assert metrics["n_samples"] == 3 and metrics["persistence/n_samples"] == 3


def test_three_month_index_leads_and_tables():
    # 5 months → 3 index leads; box value of sample b in month t (from 0) is b·t, so index lead l is the
    # mean of months l−1, l, l+1 = b·l; forecast = observation → correlation 1, RMSE 0
    field = _field([[b * t for t in range(5)] for b in range(1, 4)])
    evaluator = EnsoEvaluator()
    evaluator.update(field, field, meta=_meta(3))
    metrics = evaluator.compute()
    assert [metrics[f"nino34_corr_lead{lead}"] for lead in (1, 2, 3)] == pytest.approx([1, 1, 1])
    assert "nino34_corr_lead4" not in metrics
    assert metrics["nino34_rmse"] == 0.0
    by_lead = evaluator.compute_by_lead()
    assert by_lead["lead"].tolist() == [1, 2, 3, 4, 5]
    assert by_lead["nino34_corr"].tolist()[:3] == pytest.approx([1, 1, 1])
    assert by_lead["nino34_corr"].isna().tolist() == [False, False, False, True, True]
    assert "climatology/mse" in by_lead and "persistence/mse" not in by_lead  # no context given
    by_group = evaluator.compute_by_group()
    assert by_group["group"].tolist() == [1, 7] and by_group["n_samples"].tolist() == [2, 1]
    assert math.isnan(by_group.set_index("group").loc[7, "nino34_corr_m"])  # one sample: no correlation


def test_twelve_leads_weighted_score_and_climatology_mse():
    generator = torch.Generator().manual_seed(4)
    target = torch.randn(16, 14, 5, 5, generator=generator, dtype=torch.float64)
    evaluator = build_evaluator(OmegaConf.load(CONFIGS / "enso.yaml").evaluator)
    meta = {"lat": torch.tensor(LAT).expand(16, 5), "lon": torch.tensor(LON_EAST).expand(16, 5)}
    evaluator.update(target, target, meta=meta)  # perfect forecast, per-sample lat/lon (B × n)
    metrics = evaluator.compute()
    assert metrics["nino34_corr_m"] == pytest.approx(1.0)
    assert metrics["nino34_corr_wm"] == pytest.approx(3.405859060494817)  # Σ a_l ln l / 12
    assert metrics["climatology/mse"] == pytest.approx(float((target**2).mean()) / evaluator.sst_scale**2)
    assert evaluator.compute_by_group()["group"].tolist() == ["unknown"]


def test_enso_merge_equals_one_pass():
    generator = torch.Generator().manual_seed(5)
    single, rank0, rank1 = (EnsoEvaluator() for _ in range(3))
    for index in range(4):
        target = torch.randn(4, 14, 5, 5, generator=generator)
        members = target.unsqueeze(1) + 0.5 * torch.randn(4, 3, 14, 5, 5, generator=generator)
        context = torch.randn(4, 12, 5, 5, generator=generator)
        meta = _meta(4, months=torch.randint(1, 13, (4,), generator=generator))
        single.update(members, target, context=context, meta=meta)
        (rank0 if index % 2 else rank1).update(members, target, context=context, meta=meta)
    rank0.merge_state(rank1)
    left, right = rank0.compute(), single.compute()
    assert left.keys() == right.keys() and "crps" in left and "rank_hist_3" in left
    for key in left:
        assert left[key] == pytest.approx(right[key], rel=1e-10), key
    pd.testing.assert_frame_equal(rank0.compute_by_lead(), single.compute_by_lead(), rtol=1e-10)
    pd.testing.assert_frame_equal(rank0.compute_by_group(), single.compute_by_group(), rtol=1e-10)


def test_enso_meta_errors():
    field = _field([[1, 2, 3]])
    with pytest.raises(ValueError, match="meta\\['lat'\\]"):
        EnsoEvaluator().update(field, field)
    with pytest.raises(ValueError, match="calendar months"):
        EnsoEvaluator().update(field, field, meta=_meta(1, months=(13,)))


def test_enso_compute_before_any_update():
    with pytest.warns(UserWarning):
        metrics = EnsoEvaluator().compute()
    assert metrics["n_samples"] == 0 and metrics["nino34_corr_m"] is None
