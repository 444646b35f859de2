"""Plots: SEVIR VIL colormap, forecast sequence figures and animations (matplotlib, Agg backend)."""

from earthcast.viz.sequences import plot_forecast_file, plot_sequences, write_forecast_gif
from earthcast.viz.vil_colormap import vil_cmap

__all__ = ["plot_forecast_file", "plot_sequences", "vil_cmap", "write_forecast_gif"]
