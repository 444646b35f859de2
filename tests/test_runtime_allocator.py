"""`cpu_keep_freed_memory`: the trainer builder applies the allocator setting on CPU runs, and only then."""

import torch

from earthcast.tasks import runtime
from tests.cli.conftest import TINY_DATA, compose_config


def _config(*overrides: str):
    return compose_config([*TINY_DATA, *overrides])


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
