"""The trainer builder: what it leaves out of evaluation trainers, the monitored score's mode, and the CPU-only
settings: the allocator setting (`cpu_keep_freed_memory`) applies on CPU runs and only then; bfloat16 on a CPU
without native support gets a warning, and `bf16-mixed-if-native` falls back to float32 there."""

import logging

import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning import trainer as runtime
from tests.conftest import TINY_DATA, compose_config


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


def test_bf16_on_a_cpu_without_native_support_warns(monkeypatch, tmp_path, caplog):
    assert isinstance(runtime.cpu_has_fast_bf16(), bool)  # the real probe runs on this machine
    cfg = _config(f"paths.output_dir={tmp_path}", "trainer.precision=bf16-mixed")
    for native, warned in ((True, False), (False, True)):
        monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda native=native: native)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=runtime.__name__):
            runtime.build_trainer(cfg, fit=True)
        assert ("trainer.precision=32-true" in caplog.text) is warned


def test_bf16_if_native_picks_bf16_only_where_the_cpu_has_it(monkeypatch, tmp_path):
    cfg = _config(f"paths.output_dir={tmp_path}", f"trainer.precision={runtime.NATIVE_BF16}")
    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda native=native: native)
        trainer = runtime.build_trainer(cfg, fit=True)
        assert trainer.precision == expected


def test_monitor_mode_is_max_or_min(tmp_path):
    with pytest.raises(UserError, match="monitor.mode is 'up'"):
        runtime.build_trainer(_config(f"paths.output_dir={tmp_path}", "monitor.mode=up"), fit=True)


def test_settings_override_the_trainer_config(tmp_path):
    trainer = runtime.build_trainer(_config(f"paths.output_dir={tmp_path}"), fit=False, progress_bar=False,
                                    limit_test_batches=3, inference_mode=False)
    assert trainer.limit_test_batches == 3 and not trainer.predicting and trainer.progress_bar_callback is None


def test_a_resumed_run_continues_its_logs_from_the_checkpoint(tmp_path):
    """CSV: the rows the log held at the save; TensorBoard: events from the checkpoint's step on are hidden."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from earthcast.lightning.checkpoint import Checkpoint
    from earthcast.lightning.loggers import ContinuingCSVLogger

    cfg = _config(f"paths.output_dir={tmp_path}", "logger=default")
    saved = Checkpoint(tmp_path / "last.ckpt", {"state_dict": {}, "global_step": 7,
                                                 "earthcast": {"log_rows": {"logs/csv/metrics.csv": 3}}})
    resumed = {type(logger): logger for logger in runtime.build_loggers(cfg, saved)}
    assert resumed[ContinuingCSVLogger].keep_rows == 3
    assert resumed[TensorBoardLogger]._kwargs["purge_step"] == 7
    fresh = {type(logger): logger for logger in runtime.build_loggers(cfg, None)}
    assert fresh[ContinuingCSVLogger].keep_rows is None and "purge_step" not in fresh[TensorBoardLogger]._kwargs
