"""The quickstart presets. `earthcast train` with no experiment is the small Earthformer with its input skip on
the 48×48 twin, trained with the balanced loss; `experiment=quickstart_earthformer` is the same model without
the skip (the published architecture) with its own recipe, and `experiment=quickstart_unet` the UNet baseline.
End to end at tiny size the Earthformer trains and is scored in bfloat16 autocast on the CPU (forced here: the
preset asks for it only where the CPU has native bfloat16), its forecasts are stored as float32, and the
quickstart prints a progress line per phase."""

import json

import pytest
import xarray as xr

from earthcast.models import build_model
from earthcast.tasks.runtime import NATIVE_BF16
from tests.cli.conftest import TINY_DATA, TINY_TRAIN, compose_config, earthcast


def test_the_default_is_the_small_earthformer_with_its_input_skip():
    default, published, unet = (compose_config(args) for args in
                                ([], ["experiment=quickstart_earthformer"], ["experiment=quickstart_unet"]))
    assert default.model.name == published.model.name == "earthformer" and unet.model.name == "unet"
    assert default.model.input_skip_leads == default.dataset.out_len == 12 and published.model.input_skip_leads == 0
    assert default.trainer.precision == published.trainer.precision == NATIVE_BF16
    assert (default.trainer.max_epochs, published.trainer.max_epochs, unet.trainer.max_epochs) == (14, 29, 12)
    assert (default.loss, published.loss, unet.loss) == ("balanced_mse_mae", "mse", "mse")
    # the demo's twin is coarser and has its own root; the other presets keep the 64×64 twin
    assert (default.dataset.height, published.dataset.height, unet.dataset.height) == (48, 64, 64)
    assert default.dataset.root != published.dataset.root == unet.dataset.root
    model = build_model(default.model)
    assert 300_000 <= sum(p.numel() for p in model.parameters()) <= 400_000  # trains in minutes on 2 cores
    assert model.input_skip is not None and build_model(published.model).input_skip is None
    # a baseline swapped into the default recipe composes cleanly (the preset sets no model-specific keys)
    assert compose_config(["model=unet"]).model.name == "unet"


@pytest.mark.parametrize("experiment", [None, "quickstart_earthformer"])
def test_quickstart_earthformer_trains_in_bf16_on_cpu(experiment, workdir, data_root):
    run_dir = workdir / "runs" / f"quickstart_{experiment}"
    schedule = [arg for arg in TINY_TRAIN if not arg.startswith("model")]
    preset = [f"experiment={experiment}"] if experiment else []
    result = earthcast("train", *preset, *TINY_DATA, *schedule, "model.base_units=16", "model.stem_dims=[8,16]",
                       "trainer.precision=bf16-mixed", "trainer.check_val_every_n_epoch=1", f"paths.data_root={data_root}",
                       "dataset.root=${paths.data_root}/sevir_synth", f"hydra.run.dir={run_dir}", cwd=workdir)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "precision: bf16-mixed\n" in config and "name: earthformer" in config
    assert f"input_skip_leads: {0 if experiment else '${dataset.out_len}'}\n" in config  # every lead
    if experiment is None:  # the quickstart's progress lines (earthcast.viz.progress), one per phase
        assert "training   epoch 1/1 · step 3/3 ·" in result.stdout
        assert "training   done: 3 steps in" in result.stdout and "testing    done: 4 samples in" in result.stdout
    scores = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= scores["csi_m"] <= 1.0 and scores["mse"] > 0
    with xr.open_dataset(run_dir / "predictions.nc") as forecasts:
        assert forecasts.prediction.dtype == "float32" and forecasts.prediction.shape[1:] == (12, 32, 32)
