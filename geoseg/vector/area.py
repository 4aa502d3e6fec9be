"""Measuring in metres: the area model of a class raster (scale of a projected CRS, or a local equal-area CRS
for a geographic one) and the size of its pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio.crs import CRS

from geoseg.io.raster import ClassRaster


@dataclass(frozen=True)
class AreaModel:
    """How to measure geometries given in the raster CRS: scale (projected) or a local LAEA."""

    kind: str  # "projected" or "laea"
    factor: float  # metres per CRS unit (projected)
    crs_wkt: str
    laea: str | None = None

    @property
    def description(self) -> str:
        if self.kind == "projected":
            return "raster CRS (projected)"
        return f"local equal-area CRS {self.laea}"

    def _to_laea(self, geoms: np.ndarray) -> np.ndarray:
        from pyproj import Transformer

        tr = Transformer.from_crs(CRS.from_wkt(self.crs_wkt), self.laea, always_xy=True)

        def fn(xy: np.ndarray) -> np.ndarray:
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        return shapely.transform(geoms, fn)

    def measure(self, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(area m², perimeter m) of geometries in the raster CRS."""
        if len(geoms) == 0:
            return np.zeros(0), np.zeros(0)
        if self.kind == "projected":
            return shapely.area(geoms) * self.factor**2, shapely.length(geoms) * self.factor
        g = self._to_laea(geoms)
        return shapely.area(g), shapely.length(g)


def area_model(info: ClassRaster) -> AreaModel:
    """How to measure polygons of ``info`` (georeferenced: see :func:`~geoseg.vector.source.open_vector_source`)."""
    if not info.crs_wkt:
        raise ValueError(f"{info.path} has no CRS")  # open_vector_source refused it already
    crs = CRS.from_wkt(info.crs_wkt)
    if crs.is_projected:
        return AreaModel("projected", float(crs.linear_units_factor[1]), info.crs_wkt)
    a, b, c, d, e, f = info.transform
    lon = c + a * info.width / 2 + b * info.height / 2
    lat = f + d * info.width / 2 + e * info.height / 2
    laea = f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
    return AreaModel("laea", 1.0, info.crs_wkt, laea)


def pixel_size_m(info: ClassRaster, model: AreaModel) -> tuple[float, float]:
    """(pixel area m², pixel side m) at the raster centre (exact for projected rasters)."""
    a, b, c, d, e, f = info.transform
    if model.kind == "projected":
        area = abs(a * e - b * d) * model.factor**2
        return area, math.sqrt(area)
    r, col = info.height // 2, info.width // 2
    corners = [(col, r), (col + 1, r), (col + 1, r + 1), (col, r + 1)]
    ring = shapely.Polygon([(c + a * x + b * y, f + d * x + e * y) for x, y in corners])
    area = float(model.measure(np.array([ring]))[0][0])
    return area, math.sqrt(area)
