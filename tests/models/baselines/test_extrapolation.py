"""The optical-flow extrapolation baseline (pysteps Lucas–Kanade + semi-Lagrangian), alone and through the
command line (no fit, a test run, and eval without a checkpoint)."""

from __future__ import annotations

import json

import pytest
import torch

from earthcast.errors import UserError
from earthcast.models import build_model
from tests.conftest import TINY_DATA, earthcast

pytest.importorskip("pysteps", reason="model=extrapolation needs the `baselines` extra")
pytest.importorskip("cv2", reason="pysteps' Lucas–Kanade needs opencv")


def moving_blobs(steps: int, size: int = 48, velocity=(1.5, -1.0), start=(14.0, 30.0)) -> torch.Tensor:
    """(steps, size, size) Gaussian blob moving `velocity` (x, y) pixels per frame, values in [0, 1]."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    frames = []
    for t in range(steps):
        cx, cy = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        frames.append(torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 3.0**2)))
    return torch.stack(frames)


def peak(frame: torch.Tensor) -> tuple[int, int]:
    index = int(frame.argmax())
    return index % frame.shape[-1], index // frame.shape[-1]  # (x, y)


def test_shapes_dtype_and_no_parameters():
    model = build_model({"name": "extrapolation", "in_len": 4, "out_len": 3})
    x = torch.rand(2, 4, 20, 17, 2, dtype=torch.float32)
    y = model(x)
    assert y.shape == (2, 3, 20, 17, 2) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert not list(model.parameters())


def test_static_or_empty_fields_stay_put():
    model = build_model({"name": "extrapolation", "in_len": 3, "out_len": 2})
    zeros = torch.zeros(1, 3, 16, 16, 1)
    assert torch.equal(model(zeros), torch.zeros(1, 2, 16, 16, 1))
    still = moving_blobs(3, 32, velocity=(0.0, 0.0))[None, ..., None].float()
    assert torch.allclose(model(still), still[:, -1:].expand(-1, 2, -1, -1, -1), atol=1e-4)


def test_moving_blob_is_extrapolated_to_its_true_position_and_beats_persistence():
    in_len, out_len = 5, 6
    sequence = moving_blobs(in_len + out_len)
    inputs, truth = sequence[None, :in_len, ..., None].float(), sequence[None, in_len:, ..., None].float()
    forecast = build_model({"name": "extrapolation", "in_len": in_len, "out_len": out_len})(inputs)
    persistence = build_model({"name": "persistence", "in_len": in_len, "out_len": out_len})(inputs)
    for lead in range(out_len):
        fx, fy = peak(forecast[0, lead, ..., 0])
        tx, ty = peak(truth[0, lead, ..., 0])
        assert abs(fx - tx) <= 1 and abs(fy - ty) <= 1, (lead, (fx, fy), (tx, ty))
    mse = torch.mean((forecast - truth) ** 2)
    mse_persistence = torch.mean((persistence - truth) ** 2)
    assert mse < mse_persistence / 20


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="in_len"):
        build_model({"name": "extrapolation", "in_len": 1, "out_len": 3})
    with pytest.raises(UserError, match="motion_kwargs.fd_kwarg"):
        build_model({"name": "extrapolation", "in_len": 3, "out_len": 3, "motion_kwargs": {"fd_kwarg": {}}})
    with pytest.raises(UserError, match="outval"):
        build_model({"name": "extrapolation", "in_len": 3, "out_len": 3, "outval": "max"})


RUN = ["model=extrapolation", "trainer.limit_test_batches=2", "outputs.plot_samples=0",
       "outputs.max_prediction_samples=2", "callbacks.progress_bar=null"]


def test_train_and_eval_extrapolation_like_persistence(workdir, data_root):
    train_dir, eval_dir = workdir / "runs" / "extrapolation_train", workdir / "runs" / "extrapolation_eval"
    result = earthcast("train", *TINY_DATA, *RUN, f"paths.data_root={data_root}", f"hydra.run.dir={train_dir}",
                       cwd=workdir)
    assert "Pysteps configuration file" not in result.stdout
    assert not (train_dir / "checkpoints").exists()  # nothing to fit
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert metrics["n_samples"] == 4 and "csi_m" in metrics and "persistence/csi_m" in metrics
    earthcast("eval", *TINY_DATA, *RUN, f"paths.data_root={data_root}", f"hydra.run.dir={eval_dir}", cwd=workdir)
    assert json.loads((eval_dir / "metrics.json").read_text())["n_samples"] == 4
