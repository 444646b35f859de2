"""Checkpoints: one-line errors for missing or corrupt files, read once per command, the overrides that rebuild
their run, saves that never leave a partial file, and what an exact resume needs (RNG states)."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from earthcast.errors import UserError
from earthcast.lightning.checkpoint import Checkpoint, CheckpointReadOnce, rng_states, set_rng_states
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


def test_a_save_is_atomic_in_its_directory_and_a_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    io = CheckpointReadOnce(None)
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "step": 1}, path)
    assert torch.load(path, weights_only=True)["step"] == 1

    def disk_full(fd):  # the kernel reports ENOSPC when the data reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("earthcast.io.os.fsync", disk_full)
    with pytest.raises(UserError) as error:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "step": 2}, path)
    assert str(error.value).startswith(f"cannot save checkpoint {path} (No space left on device")
    assert "training stopped and the previous last.ckpt is intact" in str(error.value)
    assert torch.load(path, weights_only=True)["step"] == 1  # whole, and still the previous one
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_a_save_into_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot save checkpoint .*Not a directory.*no last.ckpt exists"):
        CheckpointReadOnce(None).save_checkpoint({"state_dict": {}}, tmp_path / "file" / "ckpts" / "last.ckpt")


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"rng": rng_states()}, tmp_path / "rng.ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_states(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_weights_that_do_not_fit_are_named(tmp_path):
    from earthcast.lightning import build_module
    from tests.conftest import run_config

    small = build_module(run_config(["experiment=quickstart_unet", "model.base_units=4", "model.depth=2"]))
    wide = build_module(run_config(["experiment=quickstart_unet", "model.base_units=8", "model.depth=2"]))
    torch.save({"state_dict": small.state_dict()}, tmp_path / "small.ckpt")
    with pytest.raises(UserError) as error:
        Checkpoint.read(tmp_path / "small.ckpt").load_weights(wide)
    first_key = next(k for k, v in small.state_dict().items() if v.shape != wide.state_dict()[k].shape)
    assert "shape mismatch" in str(error.value) and first_key in str(error.value)
