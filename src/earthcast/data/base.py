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

from earthcast.registry import Registry

DATASETS = Registry("dataset")
#: synthetic twin generators: name -> callable(cfg) writing a dataset root
SYNTHESIZERS = Registry("synthetic dataset")
