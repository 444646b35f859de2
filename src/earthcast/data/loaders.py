"""The training loader of a single process, made so that a resumed run reads exactly what an uninterrupted one
would have read.

`EpochShuffle` draws each epoch's order from (seed, epoch) alone, so it needs no RNG state to be saved and does
not touch torch's global generator (whose state the checkpoint carries for the model's own draws, e.g. dropout).
`ResumableLoader` is a DataLoader that Lightning treats as stateful: its `state_dict()` (the epoch and how many
of its batches the loop has finished) goes into every checkpoint, and `load_state_dict()` on resume skips the
finished batches once, so a run stopped mid-epoch continues with the next batch. Its workers' seeds also follow
(seed, epoch). Under DDP Lightning's DistributedSampler takes over (seeded by seed + epoch, resumable at
epoch boundaries).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for (run seed, epoch, stream): independent streams for the order and the worker seeds."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


class EpochShuffle(Sampler[int]):
    """A fresh permutation of `size` indices every epoch, a function of (seed, epoch) only."""

    ORDER, WORKERS = 0, 1  # epoch_seed streams

    def __init__(self, size: int, seed: int):
        self.size, self.seed = int(size), int(seed)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        """The next iteration is epoch `epoch` without its first `skip` indices (then whole epochs again)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, self.ORDER))
        order = torch.randperm(self.size, generator=generator)
        skip, self.skip = self.skip, 0
        return iter(order[skip:].tolist())


class ResumableLoader(DataLoader):
    """See the module docstring. `progress()` returns (batches of the current epoch finished, epoch complete)."""

    def __init__(self, dataset, *, sampler: EpochShuffle, progress: Callable[[], tuple[int, bool]], **options):
        super().__init__(dataset, sampler=sampler, generator=torch.Generator(), **options)
        self.progress = progress

    def __iter__(self):
        self.generator.manual_seed(epoch_seed(self.sampler.seed, self.sampler.epoch, EpochShuffle.WORKERS))
        return super().__iter__()

    def state_dict(self) -> dict:
        done, complete = self.progress()
        return {"epoch": self.sampler.epoch, "batches": int(done), "complete": bool(complete)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("complete"):
            self.sampler.resume_at(int(state["epoch"]) + 1, 0)
        else:
            self.sampler.resume_at(int(state["epoch"]), int(state["batches"]) * int(self.batch_size))
