"""write_report renders tables and plots for SEVIR (ensemble) and ENSO evaluations."""

import pytest
import torch

from earthcast.metrics import EnsoEvaluator, SevirEvaluator
from earthcast.metrics.report import summary_keys, write_evaluation, write_report


def _sevir_results():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 8, 8, generator=generator) * 255
    members = (target.unsqueeze(1) + 30 * torch.randn(2, 4, 3, 8, 8, generator=generator)).clamp(0, 255)
    evaluator = SevirEvaluator(frame_minutes=5, fss_scales=[1, 3])
    evaluator.update(members, target, context=target[:, :2], meta={"event_type": ["Hail", "Tornado"]})
    return evaluator.compute(), evaluator.compute_by_lead(), evaluator.compute_by_group()


def test_sevir_report(tmp_path):
    metrics, by_lead, by_group = _sevir_results()
    report = write_report(tmp_path, metrics, by_lead, by_group, extra={"model": "unet", "checkpoint": "best.ckpt"})
    text = report.read_text()
    assert report == tmp_path / "report.md"
    assert "| model | unet |" in text
    assert "| metric | model | persistence | skill vs persistence |" in text
    assert "| csi_m |" in text and "| Hail |" in text and "lead_minutes" in text
    # mse skill = 1 − model/persistence
    row = next(line for line in text.splitlines() if line.startswith("| mse |"))
    model, persistence, skill = (float(cell) for cell in row.strip("|").split("|")[1:4])
    assert skill == pytest.approx(1 - model / persistence, rel=1e-3)
    for name in ("csi_vs_lead.png", "mse_vs_lead.png", "rank_histogram.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
        assert f"(plots/{name})" in text
    assert "rank_hist_0" not in text  # shown as a plot, not a table row


def test_enso_report_and_missing_values(tmp_path):
    lat, lon = torch.tensor([5.0, 0.0, -5.0]), torch.tensor([190.0, 215.0, 240.0])
    generator = torch.Generator().manual_seed(1)
    target = torch.randn(6, 14, 3, 3, generator=generator)
    evaluator = EnsoEvaluator()
    evaluator.update(target + 0.3 * torch.randn(6, 14, 3, 3, generator=generator), target,
                     context=torch.randn(6, 12, 3, 3, generator=generator), meta={"lat": lat, "lon": lon})
    metrics = evaluator.compute()
    write_report(tmp_path, metrics, evaluator.compute_by_lead(), evaluator.compute_by_group())
    text = (tmp_path / "report.md").read_text()
    assert "| nino34_corr_m |" in text and "skill vs climatology" in text
    assert (tmp_path / "plots" / "nino34_corr_vs_lead.png").exists()
    assert not (tmp_path / "plots" / "rank_histogram.png").exists()
    # metrics alone (no tables), with an undefined score shown as a dash
    other = tmp_path / "bare"
    write_report(other, {"csi_m": None, "n_samples": 0})
    assert "| csi_m | – |" in (other / "report.md").read_text()


# -- the terminal summary after train/eval: headline scores first, a module's own scores when it has none
def test_headline_scores_are_shown_in_fixed_order():
    scores = {"mae": 0.1, "csi_m": 0.3, "persistence/csi_m": 0.2, "csi_16": 0.5}
    assert summary_keys(scores) == ["csi_m", "mae"]


def test_scores_without_headline_keys_are_listed_instead_of_an_empty_table():
    scores = {"align_mae_low_noise": 1.2, "anticipation_mae": 2.2, "persistence_mae": 3.0,
              "anticipation_sigma": None, "by_lead": [1, 2], "persistence/x": 0.1}
    assert summary_keys(scores) == ["align_mae_low_noise", "anticipation_mae", "anticipation_sigma",
                                    "persistence_mae"]


def test_metrics_json_comes_last_so_it_means_everything_is_there(tmp_path, monkeypatch):
    metrics, by_lead, by_group = _sevir_results()
    results = {"scores": metrics, "by_lead": by_lead, "by_group": by_group}

    def report_fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("earthcast.metrics.report.write_report", report_fails)
    with pytest.raises(OSError):
        write_evaluation(tmp_path, results, split="test", predictions=None, plot_samples=0, report=True,
                         frame_minutes=5, about={})
    assert not (tmp_path / "metrics.json").exists() and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    write_evaluation(tmp_path, results, split="test", predictions=None, plot_samples=0, report=True,
                     frame_minutes=5, about={})
    assert (tmp_path / "metrics.json").stat().st_mtime_ns >= (tmp_path / "report.md").stat().st_mtime_ns
