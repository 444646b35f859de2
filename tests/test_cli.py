"""The command line: help, Hydra's words passed through, checkpoint overrides replayed, tracebacks on request."""

from __future__ import annotations

from earthcast.commands import COMMANDS, summary, value_of, with_overrides
from tests.conftest import TINY_DATA, TINY_TRAIN, earthcast


def test_top_level_help_lists_every_command(workdir):
    out = earthcast("--help", cwd=workdir).stdout
    for name in COMMANDS:
        assert f"  {name} " in out and summary(name) in out


def test_subcommand_help_and_cfg_job(workdir):
    help_text = earthcast("eval", "--help", cwd=workdir).stdout
    assert "model" in help_text and "dataset" in help_text
    job = earthcast("train", "model=persistence", "trainer.max_epochs=3", "--cfg", "job", cwd=workdir).stdout
    assert "name: persistence" in job and "max_epochs: 3" in job


def test_multirun_runs_each_value(workdir, data_root):
    sweep = workdir / "runs" / "sweep"
    earthcast("train", "-m", *TINY_DATA, *TINY_TRAIN, f"paths.data_root={data_root}", "model.base_units=4,6",
              f"hydra.sweep.dir={sweep}", cwd=workdir)
    for job in ("0", "1"):
        assert (sweep / job / "metrics.json").exists()
    assert "model.base_units=4" in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "model.base_units=6" in (sweep / "1" / ".hydra" / "overrides.yaml").read_text()


def test_replayed_overrides_go_before_the_command_lines_and_lose_to_them():
    words = ["-m", "model.depth=3", "ckpt_path=a.ckpt", "--cfg", "job"]
    replayed = ["model=unet", "model.depth=2", "seed=7"]
    assert with_overrides(words, replayed) == ["-m", "model=unet", "seed=7", "model.depth=3", "ckpt_path=a.ckpt",
                                               "--cfg", "job"]
    assert value_of(words, "ckpt_path") == "a.ckpt" and value_of(["ckpt_path=null"], "ckpt_path") is None
    assert value_of(["+ckpt_path='b c'"], "ckpt_path") == "b c"


# one-line mistakes, command by command: tests/test_bad_input_matrix.py


def test_full_traceback_on_request(workdir):
    result = earthcast("eval", "ckpt_path=/nonexistent/best.ckpt", cwd=workdir, check=False,
                       env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
