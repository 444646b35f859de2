"""`cpu_keep_freed_memory`: the trainer builder applies the allocator setting on CPU runs, and only then."""

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from earthcast.tasks import runtime
from tests.cli.conftest import TINY_DATA


def _config(*overrides: str):
    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        return compose(config_name="train", overrides=[*TINY_DATA, *overrides])


def test_cpu_training_keeps_freed_memory(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(True) or True)
    cfg = _config(f"paths.output_dir={tmp_path}")
    assert cfg.cpu_keep_freed_memory is True  # the default
    runtime.build_trainer(cfg, fit=True)
    assert calls == [True]

    calls.clear()
    runtime.build_trainer(_config(f"paths.output_dir={tmp_path}", "trainer.accelerator=auto"), fit=True)
    assert calls == ([] if torch.cuda.is_available() else [True])  # only where "auto" resolves to the CPU

    calls.clear()
    runtime.build_trainer(_config(f"paths.output_dir={tmp_path}", "cpu_keep_freed_memory=false"), fit=True)
    assert calls == []
