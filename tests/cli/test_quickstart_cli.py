"""`experiment=quickstart_earthformer` end to end at tiny size: the Earthformer trains and is scored in bfloat16
autocast on the CPU (forced here: the preset asks for it only where the CPU has native bfloat16), and its
forecasts are stored as float32."""

import json
from pathlib import Path

import xarray as xr

from earthcast.cli import config_dir
from earthcast.tasks.runtime import NATIVE_BF16
from tests.cli.conftest import TINY_DATA, TINY_TRAIN, earthcast


def test_quickstart_earthformer_trains_in_bf16_on_cpu(workdir, data_root):
    run_dir = workdir / "runs" / "quickstart_earthformer"
    schedule = [arg for arg in TINY_TRAIN if not arg.startswith("model")]
    earthcast("train", "experiment=quickstart_earthformer", *TINY_DATA, *schedule, "model.base_units=16",
              "model.stem_dims=[8,16]", "trainer.precision=bf16-mixed", f"paths.data_root={data_root}",
              f"hydra.run.dir={run_dir}", cwd=workdir)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "precision: bf16-mixed\n" in config and "name: earthformer" in config
    preset = (Path(config_dir()) / "experiment" / "quickstart_earthformer.yaml").read_text()
    assert f"precision: {NATIVE_BF16}" in preset
    scores = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= scores["csi_m"] <= 1.0 and scores["mse"] > 0
    with xr.open_dataset(run_dir / "predictions.nc") as forecasts:
        assert forecasts.prediction.dtype == "float32" and forecasts.prediction.shape[1:] == (12, 32, 32)
