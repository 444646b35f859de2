"""The training loader of one process: each epoch's order is a function of (seed, epoch), and a loader restored
from a checkpoint's state continues with the batch after the last finished one."""

from __future__ import annotations

import torch

from earthcast.data.loaders import EpochShuffle, ResumableLoader


def _loader(n=10, seed=3, batch_size=2, done=(0, False)):
    return ResumableLoader(list(range(n)), batch_size=batch_size, sampler=EpochShuffle(n, seed),
                           progress=lambda: done)


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [int(i) for batch in loader for i in batch]


def test_each_epoch_is_a_new_permutation_of_seed_and_epoch_alone():
    first, again = _loader(), _loader()
    torch.manual_seed(123)  # the global generator plays no part
    orders = [_epoch(first, epoch) for epoch in range(3)]
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert orders[0] != orders[1] != orders[2]
    assert [_epoch(again, epoch) for epoch in (2, 0, 1)] == [orders[2], orders[0], orders[1]]  # any order of calls
    assert _epoch(_loader(seed=4), 0) != orders[0]


def test_a_restored_loader_skips_the_finished_batches_once():
    whole = _epoch(_loader(), 1)
    saved = _loader(done=(2, False))
    saved.sampler.set_epoch(1)
    state = saved.state_dict()
    assert state == {"epoch": 1, "batches": 2, "complete": False}
    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # Lightning sets the same epoch again: the skip stays
    assert [int(i) for batch in resumed for i in batch] == whole[4:]
    assert _epoch(resumed, 2) == _epoch(_loader(), 2)  # then whole epochs again


def test_a_state_saved_at_the_end_of_an_epoch_resumes_at_the_next():
    resumed = _loader()
    resumed.load_state_dict({"epoch": 1, "batches": 5, "complete": True})
    assert [int(i) for batch in resumed for i in batch] == _epoch(_loader(), 2)


def test_worker_seeds_follow_the_epoch():
    loader = _loader()
    loader.sampler.set_epoch(4)
    iter(loader)
    seed_4 = loader.generator.initial_seed()
    loader.sampler.set_epoch(5)
    iter(loader)
    assert loader.generator.initial_seed() != seed_4
    loader.sampler.set_epoch(4)
    iter(loader)
    assert loader.generator.initial_seed() == seed_4
