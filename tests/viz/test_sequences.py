"""Sequence figures: rows of frames as PNG and GIF, written atomically."""

from __future__ import annotations

import numpy as np
import torch

from earthcast.viz import plot_knowledge_rows, plot_rows, write_rows_gif


def test_rows_of_frames_and_their_animation(tmp_path):
    context, target = torch.rand(4, 8, 8, 1) * 255, torch.rand(3, 8, 8, 1) * 255
    rows = torch.rand(2, 3, 8, 8, 1) * 255
    png = plot_knowledge_rows(tmp_path / "knowledge.png", context, target, rows, ["n = -2", "n = +2"], 10)
    gif = write_rows_gif(tmp_path / "knowledge.gif", context, target, rows, ["n = -2", "n = +2"])
    sst = plot_rows(tmp_path / "sst.png", [("target", np.random.randn(14, 6, 12), False)], frame_minutes=None,
                    vil=False, max_columns=4)
    assert png.read_bytes()[:4] == b"\x89PNG" and gif.read_bytes()[:3] == b"GIF" and sst.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knowledge.gif", "knowledge.png", "sst.png"]
