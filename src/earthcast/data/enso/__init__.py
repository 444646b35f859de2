"""ICAR-ENSO SST-anomaly forecasting: the file archive, the reader (`dataset=enso`), its checker and the
synthetic twin (`dataset=enso_synth`)."""

from earthcast.data.enso import check, synth
from earthcast.data.enso.reader import EnsoDataModule

__all__ = ["EnsoDataModule", "check", "synth"]
