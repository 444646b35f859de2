"""Values checked in one place: the rules table against composed configs, and the checks a table cannot hold.
(Through the command line, with the exit code and the one-line contract: tests/test_bad_input_matrix.py.)"""

from __future__ import annotations

import pytest
import torch

from earthcast.errors import UserError
from earthcast.validation import RULES, Rule, check, known_precisions, validate
from tests.conftest import compose_config


@pytest.mark.parametrize("command", ["train", "eval", "predict", "sample", "info", "data"])
def test_every_shipped_command_config_is_valid(command):
    validate(compose_config([], name=command), command, outputs=False)


@pytest.mark.parametrize("experiment", ["quickstart_unet", "enso_synth_earthformer", "prediff_vae", "sevir_earthformer"])
def test_shipped_presets_are_valid(experiment):
    validate(compose_config([f"experiment={experiment}"]), "train", outputs=False)


@pytest.mark.parametrize("override,fragment", [
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5 must be an integer"),
    ("trainer.max_epochs=true", "must be an integer"),  # a bool is not a count
    ("dataset.batch_size=null", "dataset.batch_size=None must be set"),
    ("model.depth=[2,0]", "model.depth=0 must be ≥ 1"),
    ("trainer.limit_test_batches=0.0", "trainer.limit_test_batches=0.0 must be > 0"),
    ("trainer.devices=[0,1]", "this machine has no CUDA GPU" if not torch.cuda.is_available() else None),
    ("trainer.precision=bf16", None),  # Lightning's short forms are known too
    ("trainer.limit_val_batches=0", None),  # no validation is allowed
    ("optim.total_batch_size=null", None),
])
def test_values_against_the_rules(override, fragment):
    extra = ["trainer.accelerator=gpu"] if override.startswith("trainer.devices=[") else []
    cfg = compose_config(["experiment=quickstart_unet", override, *extra])
    if fragment is None:
        validate(cfg, "train", outputs=False)
        return
    with pytest.raises(UserError) as error:
        validate(cfg, "train", outputs=False)
    assert fragment in str(error.value)


def test_a_rule_checks_kind_then_range():
    count = Rule(int, low=1, hint="see the docs")
    check("k", 3, count)
    with pytest.raises(UserError, match=r"^k=0 must be ≥ 1; see the docs$"):
        check("k", 0, count)
    with pytest.raises(UserError, match="must be a number"):
        check("lr", "1e-3x", Rule(float, above=0))
    check("lr", 1, Rule(float, above=0))  # an integer is a number
    check("limit", 0.5, Rule("limit", low=0))
    with pytest.raises(UserError, match="fraction"):
        check("limit", 2.5, Rule("limit", low=0))


def test_every_rule_names_a_key_of_some_command():
    keys = set()
    for command in ("train", "eval", "sample"):
        cfg = compose_config([], name=command)
        keys |= {key for key in RULES if _has(cfg, key)}
    keys |= {key for key in RULES if _has(compose_config(["experiment=quickstart_unet"]), key)}
    assert set(RULES) - keys <= {"model.depth", "model.num_heads", "model.dropout", "trainer.max_steps"}


def _has(cfg, key):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default="<absent>") != "<absent>"


def test_precisions_are_lightning_s_and_earthcast_s():
    assert {"32-true", "bf16-mixed", "16-mixed", "bf16-mixed-if-native"} <= set(known_precisions())


def test_an_empty_data_root(monkeypatch):
    monkeypatch.setenv("EARTHCAST_DATA_ROOT", "")
    with pytest.raises(UserError, match=r"paths.data_root is empty \(is EARTHCAST_DATA_ROOT exported but empty\?\)"):
        validate(compose_config([]), "train", outputs=False)
