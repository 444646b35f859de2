"""The SEVIR VIL display colormap.

Levels (VIL 0–255) and colours follow the SEVIR dataset's visualisation convention (Veillette et al., 2020):
grey below 16, greens to 74, yellows/oranges to 181, reds to 219, magenta above.
"""

from __future__ import annotations

from matplotlib.colors import BoundaryNorm, ListedColormap

VIL_LEVELS = [0.0, 16.0, 31.0, 59.0, 74.0, 100.0, 133.0, 160.0, 181.0, 219.0, 255.0]
VIL_COLORS = [
    (0.0, 0.0, 0.0),
    (0.30196, 0.30196, 0.30196),
    (0.15686, 0.74510, 0.15686),
    (0.09804, 0.58824, 0.09804),
    (0.03922, 0.41176, 0.03922),
    (0.03922, 0.29412, 0.03922),
    (0.96078, 0.96078, 0.0),
    (0.92941, 0.67451, 0.0),
    (0.94118, 0.43137, 0.0),
    (0.62745, 0.0, 0.0),
    (0.90588, 0.0, 1.0),
]


def vil_cmap() -> tuple[ListedColormap, BoundaryNorm]:
    """(colormap, norm) to pass to imshow for VIL in 0–255 units."""
    cmap = ListedColormap(VIL_COLORS[1:], name="sevir_vil")
    cmap.set_under(VIL_COLORS[0])
    cmap.set_over(VIL_COLORS[-1])
    norm = BoundaryNorm(VIL_LEVELS[1:], cmap.N)
    return cmap, norm
