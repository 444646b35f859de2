"""Plots: SEVIR VIL colormap and forecast sequence figures (matplotlib, Agg backend)."""

from earthcast.viz.sequences import plot_forecast_file, plot_sequences
from earthcast.viz.vil_colormap import vil_cmap

__all__ = ["plot_forecast_file", "plot_sequences", "vil_cmap"]
