"""Code tables of geoseg's products, shared by the rooms that write them and those that describe them.

The change raster's values live here (not in :mod:`geoseg.change`) so that delivery (STAC, report, styles)
can describe a change product without importing the change computation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassInfo:
    """One class of a class raster: its code, name and display colour (a model card's class table,
    the change raster's classes, ...)."""

    value: int
    name: str
    color: str  # "#RRGGBB"

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


NO_CHANGE, LOSS, GAIN, UNOBSERVED = 0, 1, 2, 255

#: value -> (name, RGBA) of the change raster's classes.
CHANGE_CLASSES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    NO_CHANGE: ("no_change", (217, 217, 217, 255)),
    LOSS: ("forest_loss", (227, 26, 28, 255)),
    GAIN: ("forest_gain", (51, 160, 44, 255)),
}
