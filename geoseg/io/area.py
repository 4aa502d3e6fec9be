"""Ground areas, written once: the area of a raster's pixels and of geometries in its CRS, in m² on the
ground (WGS84 ellipsoid), whatever the CRS.

A projected CRS measures true areas only where it is equal-area at the scene's scale: UTM near its
central meridian is (within 0.5 %), Web Mercator is not (+17.5 % at 22° N, +100 % at 45°). So a projected
CRS is trusted only when its pixel area at the scene centre matches the geodesic area of that pixel's
footprint within :data:`EQUAL_AREA_TOLERANCE`; otherwise, and for geographic CRSs, areas are measured on
the ellipsoid (a local Lambert azimuthal equal-area projection for geometries, the geodesic footprint for a
pixel).  No torch, no dask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from rasterio.crs import CRS

__all__ = ["EQUAL_AREA_TOLERANCE", "AreaModel", "area_model", "pixel_area_m2", "projected_area_ratio"]

#: A projected CRS whose pixel area at the scene centre is within this relative error of the ground area
#: is measured in its own units (exact on its grid); a larger error means measuring on the ellipsoid.
EQUAL_AREA_TOLERANCE = 0.005


def _centre_pixel(transform: Sequence[float], width: int, height: int) -> list[tuple[float, float]]:
    a, b, c, d, e, f = transform[:6]
    col, row = width // 2, height // 2
    return [(c + a * x + b * y, f + d * x + e * y) for x, y in
            ((col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1))]


@lru_cache(maxsize=64)
def _geodesic_pixel_m2(crs_wkt: str, transform: tuple[float, ...], width: int, height: int) -> float:
    """Geodesic area (WGS84) of the scene's centre pixel footprint."""
    from pyproj import Geod, Transformer

    crs = CRS.from_wkt(crs_wkt)
    corners = _centre_pixel(transform, width, height)
    if not crs.is_geographic:
        tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        corners = [tr.transform(x, y) for x, y in corners]
    lons, lats = [p[0] for p in corners], [p[1] for p in corners]
    return abs(Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)[0])


def _grid_pixel_m2(crs: CRS, transform: Sequence[float]) -> float:
    a, b, _, d, e, _ = transform[:6]
    return abs(a * e - b * d) * float(crs.linear_units_factor[1]) ** 2


def projected_area_ratio(crs_wkt: str, transform: Sequence[float], width: int, height: int) -> float | None:
    """Grid area / ground area of the centre pixel for a projected CRS (1.0 = equal-area there); None for a
    CRS that is not projected."""
    crs = CRS.from_wkt(crs_wkt)
    if not crs.is_projected:
        return None
    return _grid_pixel_m2(crs, transform) / _geodesic_pixel_m2(crs_wkt, tuple(transform[:6]), width, height)


def _trust_projected(crs_wkt: str, transform: Sequence[float], width: int, height: int) -> bool:
    ratio = projected_area_ratio(crs_wkt, transform, width, height)
    return ratio is not None and abs(ratio - 1.0) <= EQUAL_AREA_TOLERANCE


def pixel_area_m2(crs_wkt: str | None, transform: Sequence[float], width: int, height: int) -> float | None:
    """Ground area of one pixel in m²: the grid's own area in a projected CRS that is equal-area at the
    scene's scale, else the geodesic area of the scene's centre pixel (geographic CRSs, Web Mercator, a CRS
    far from its projection centre); None without a CRS or with one that is neither projected nor geographic."""
    if not crs_wkt:
        return None
    crs = CRS.from_wkt(crs_wkt)
    if not (crs.is_projected or crs.is_geographic):
        return None
    if _trust_projected(crs_wkt, transform, width, height):
        return _grid_pixel_m2(crs, transform)
    return _geodesic_pixel_m2(crs_wkt, tuple(transform[:6]), width, height)


@dataclass(frozen=True)
class AreaModel:
    """How to measure geometries given in a raster's CRS: its own scale (a projected CRS that is equal-area
    at the scene's scale) or a local equal-area CRS (LAEA at the scene centre) otherwise."""

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

    def pixel_m2(self, transform: Sequence[float], width: int, height: int) -> tuple[float, float]:
        """(pixel area m², pixel side m) at the raster centre (exact on the grid of a trusted projected CRS)."""
        if self.kind == "projected":
            a, b, _, d, e, _ = transform[:6]
            area = abs(a * e - b * d) * self.factor**2
        else:
            area = float(self.measure(np.array([shapely.Polygon(_centre_pixel(transform, width, height))]))[0][0])
        return area, math.sqrt(area)


def area_model(crs_wkt: str, transform: Sequence[float], width: int, height: int) -> AreaModel:
    """The area model of a raster grid (see the module docstring)."""
    crs = CRS.from_wkt(crs_wkt)
    if crs.is_projected and _trust_projected(crs_wkt, transform, width, height):
        return AreaModel("projected", float(crs.linear_units_factor[1]), crs_wkt)
    a, b, c, d, e, f = transform[:6]
    x, y = c + a * width / 2 + b * height / 2, f + d * width / 2 + e * height / 2
    if crs.is_projected:
        from pyproj import Transformer

        x, y = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    laea = f"+proj=laea +lat_0={y:.6f} +lon_0={x:.6f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
    return AreaModel("laea", 1.0, crs_wkt, laea)
