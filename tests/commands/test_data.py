"""`earthcast data`: the action word, and a root checked through the command line."""

from __future__ import annotations

from earthcast.commands.data import prepare
from tests.conftest import TINY_DATA, earthcast


def test_the_action_is_the_first_word():
    assert prepare(["synth", "dataset=enso_synth"]) == ["action=synth", "dataset=enso_synth"]
    assert prepare(["action=check"]) == ["action=check"] and prepare([]) == []


def test_check_reports_the_twin(workdir, data_root):
    result = earthcast("data", "check", *TINY_DATA, f"paths.data_root={data_root}", cwd=workdir)
    assert "train" in result.stdout and "sequences" in result.stdout


def test_synth_again_with_the_same_settings_says_so(workdir, data_root):
    result = earthcast("data", "synth", *TINY_DATA, f"paths.data_root={data_root}", cwd=workdir)
    assert "is up to date (same settings)" in " ".join(result.stdout.split())  # rich wraps long lines
