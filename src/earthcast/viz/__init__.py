"""Plots: the SEVIR VIL colormap, sequence figures and their animations (matplotlib, Agg canvas)."""

from earthcast.viz.sequences import (
    plot_forecast_file,
    plot_knowledge_rows,
    plot_rows,
    plot_sequences,
    write_rows_gif,
)
from earthcast.viz.vil_colormap import vil_cmap

__all__ = ["plot_forecast_file", "plot_knowledge_rows", "plot_rows", "plot_sequences", "vil_cmap",
           "write_rows_gif"]
