"""The data interface every dataset implements.

Datasets are LightningDataModules registered by name in `DATASETS`, built from `cfg.dataset`.
Each batch is a dict:
    "inputs":  float32 B × T_in  × H × W × C, normalised for the model (SEVIR: VIL/255)
    "targets": float32 B × T_out × H × W × C, same scale
    plus per-sample metadata that collates to lists/tensors, e.g. SEVIR "event_id", "event_type",
    "time_utc" (ISO strings); ENSO "lat", "lon" (degrees), "init_month".
A datamodule also provides
    to_physical(x) -> tensor in physical units (SEVIR: VIL 0–255; ENSO: °C) for the evaluators, and
    describe() -> dict of facts for reports (name, frame interval in minutes, grid, split sizes).
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

from earthcast.registry import Registry

DATASETS = Registry("dataset")
#: synthetic twin generators: name -> callable(cfg) writing a dataset root
SYNTHESIZERS = Registry("synthetic dataset")


def evaluation_sampler(dataset, world_size: int | None = None, rank: int | None = None) -> Sampler | None:
    """Under DDP, each rank scores a disjoint share of `dataset` and every sample exactly once.

    Lightning's default for val/test is a DistributedSampler, which pads the shares to equal length with
    repeated samples, so the synced metrics count some samples twice. Rank r here gets samples r, r + W, …;
    shares may differ by one batch, which is safe because evaluators sync only at the epoch's end. World size
    and rank come from the arguments (known to the trainer before the process group exists) or else from the
    initialised process group; None when there is only one process."""
    if world_size is None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return None
        world_size, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if world_size == 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
