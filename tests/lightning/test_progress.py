"""The phase progress lines (earthcast.lightning.progress); end to end through the quickstart in
tests/commands/test_train.py."""

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader

from earthcast.lightning.progress import PhaseProgress, clock


def test_clock():
    assert [clock(s) for s in (0, 59.4, 61, 3599, 3600, 3725)] == ["0:00", "0:59", "1:01", "59:59", "1:00:00",
                                                                     "1:02:05"]


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch["inputs"]).square().mean()

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_line_per_validation_and_one_in_testing_with_the_time_left_and_one_when_each_phase_ends(tmp_path, caplog):
    data = DataLoader([{"inputs": torch.ones(2)}] * 8, batch_size=2)  # 4 steps per epoch
    trainer = L.Trainer(max_epochs=4, check_val_every_n_epoch=2, callbacks=[PhaseProgress(every_n_epochs=1)], logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="earthcast"):
        trainer.fit(Tiny(), data, data)
        trainer.test(Tiny(), data, verbose=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "earthcast"]
    assert lines[0].startswith("training   epoch 2/4 · step 8/16 · 0:0") and "left" in lines[0]
    assert lines[1].startswith("training   epoch 4/4 · step 16/16 · ") and "left" not in lines[1]
    assert lines[2].startswith("training   done: 16 steps in 0:0")
    assert lines[3].startswith("testing    batch 1/4 · 0:0") and "left" in lines[3]
    assert lines[4].startswith("testing    done: 8 samples in 0:0") and len(lines) == 5
