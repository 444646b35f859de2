"""Your own gridded data: any netCDF/Zarr store xarray opens (`dataset=gridded`), its checker and a synthetic
example store (`dataset=gridded_synth`)."""

from earthcast.data.gridded import check, synth
from earthcast.data.gridded.reader import GriddedDataModule
from earthcast.data.gridded.store import GriddedStore

__all__ = ["GriddedDataModule", "GriddedStore", "check", "synth"]
