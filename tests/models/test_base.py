"""Models are built by name from their config: every shipped model config builds, a setting the model does not
take is a one-line error."""

from __future__ import annotations

import pytest

from earthcast.config import config_dir
from earthcast.errors import UserError
from earthcast.models import MODELS, build_model
from tests.conftest import run_config

FORECASTERS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if not p.stem.startswith("prediff"))
#: the dataset each published configuration is made for (the rest run on the default twin)
DATASETS = {"earthformer_sevir": "sevir", "earthformer_sevirlr": "sevirlr", "earthformer_enso": "enso"}


@pytest.mark.parametrize("model", FORECASTERS)
def test_every_model_config_builds(model):
    if model == "extrapolation":
        pytest.importorskip("pysteps", reason="model=extrapolation needs the `baselines` extra")
    cfg = run_config([f"model={model}", f"dataset={DATASETS.get(model, 'sevir_synth')}"])["model"]
    assert build_model(cfg).out_len == cfg["out_len"]


def test_unknown_setting_and_unknown_model():
    with pytest.raises(UserError, match="model.widht is not a setting of model=unet"):
        build_model({"name": "unet", "in_len": 2, "out_len": 1, "widht": 3})
    with pytest.raises(UserError, match="unknown model 'nope'"):
        build_model({"name": "nope"})
    assert {"persistence", "unet", "convlstm", "earthformer"} <= set(MODELS.names())
