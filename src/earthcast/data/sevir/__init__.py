"""SEVIR and SEVIR-LR VIL nowcasting: the reader (`dataset=sevir|sevirlr`), its checker, the SEVIR-LR builder
and the synthetic twins (`dataset=sevir_synth|sevirlr_synth`)."""

from earthcast.data.sevir import check, synth
from earthcast.data.sevir.reader import SevirDataModule

__all__ = ["SevirDataModule", "check", "synth"]
