"""Checkpoints: one-line errors for missing or corrupt files, read once per command, and the overrides that
rebuild their run."""

from __future__ import annotations

import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint, CheckpointReadOnce
from tests.conftest import assert_one_line_error, earthcast


def test_corrupt_checkpoint(workdir, tmp_path):
    bad = tmp_path / "checkpoints" / "best.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(earthcast("eval", f"ckpt_path={bad}", cwd=workdir, check=False),
                          "cannot read checkpoint", str(bad))


def test_read_errors_and_what_a_checkpoint_holds(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        Checkpoint.read(tmp_path / "none.ckpt")
    torch.save({"weights": 1}, tmp_path / "plain.ckpt")
    with pytest.raises(UserError, match="not a Lightning checkpoint"):
        Checkpoint.read(tmp_path / "plain.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {"module": "forecast"}},
                "earthcast": {"overrides": ["model=unet"]}}, tmp_path / "run.ckpt")
    checkpoint = Checkpoint.read(tmp_path / "run.ckpt")
    assert checkpoint.module == "forecast" and checkpoint.overrides == ["model=unet"]


def test_the_command_s_checkpoint_is_not_read_again(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "a.ckpt")
    torch.save({"state_dict": {"x": torch.ones(1)}}, tmp_path / "b.ckpt")
    checkpoint = Checkpoint.read(tmp_path / "a.ckpt")
    io = CheckpointReadOnce(checkpoint)
    assert io.load_checkpoint(tmp_path / "a.ckpt") is checkpoint.content
    assert "x" in io.load_checkpoint(tmp_path / "b.ckpt", weights_only=True)["state_dict"]  # any other file is read
