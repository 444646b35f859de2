"""Bad input: one line naming the thing and the fix, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from tests.cli.conftest import earthcast


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args,fragments", [
    (["train", "model=nosuchmodel"], ["unknown model 'nosuchmodel'", "unet"]),
    (["train", "trainer.nosuchkey=1"], ["unknown config key", "trainer.nosuchkey"]),
    (["eval", "ckpt_path=/nonexistent/best.ckpt"], ["checkpoint not found", "/nonexistent/best.ckpt"]),
    (["frobnicate"], ["unknown subcommand"]),
])
def test_config_mistakes(workdir, args, fragments):
    assert_one_line_error(earthcast(*args, cwd=workdir, check=False), *fragments)


def test_missing_data_root(workdir, tmp_path):
    result = earthcast("train", "dataset=sevir", f"paths.data_root={tmp_path}/absent", f"hydra.run.dir={tmp_path}/r",
                       cwd=workdir, check=False)
    assert_one_line_error(result, str(tmp_path / "absent"))


def test_corrupt_checkpoint(workdir, tmp_path):
    bad = tmp_path / "checkpoints" / "best.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(earthcast("eval", f"ckpt_path={bad}", cwd=workdir, check=False),
                          "cannot read checkpoint", str(bad))


def test_full_traceback_on_request(workdir):
    result = earthcast("eval", "ckpt_path=/nonexistent/best.ckpt", cwd=workdir, check=False,
                       env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
