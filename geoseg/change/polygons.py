"""The loss polygons of ``detect_change`` and their minimum mapping unit.

:func:`geoseg.vector.api.vectorize_raster` polygonizes the ``forest_loss`` class of the finished change
raster (seamless across blocks); each polygon is then one connected patch of loss pixels exactly, and the
minimum mapping unit *drops* patches smaller than ``min_area_ha`` (rather than sieving them into a
neighbour: see docs/change.md), and adds ``n_pixels`` and the WGS84 centroid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ParameterError
from geoseg.io.output import GPKG_DATASET_OPTIONS

__all__ = ["PRESETS", "DEFAULT_MIN_AREA_HA", "LOSS_LAYER", "POLYGON_CHUNK", "parse_min_area", "loss_polygons"]

#: Minimum mapping units (hectares) by preset name.
PRESETS: dict[str, float] = {"default": 0.3, "prodes": 6.25}
DEFAULT_MIN_AREA_HA = PRESETS["default"]
LOSS_LAYER = "loss"
#: Features per read/write when the loss polygons are post-processed.
POLYGON_CHUNK = 50_000

_AREA = re.compile(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ha|m2|m²|km2|km²)")
_HA_PER_UNIT = {"ha": 1.0, "m2": 1e-4, "m²": 1e-4, "km2": 100.0, "km²": 100.0}


def parse_min_area(value: str | float | int | None, preset: str | None = None) -> float:
    """``--min-area``/``--preset`` -> hectares.

    Strings need a unit (``0.3ha``, ``3000m2``, ``0.01km2``): a bare number is refused because
    ``geoseg vectorize`` reads bare numbers as m² while MMUs are usually quoted in hectares.
    Numbers (the Python API) are hectares.  Neither given: the ``default`` preset (0.3 ha).
    """
    if preset is not None:
        key = str(preset).strip().lower()
        if key not in PRESETS:
            raise ParameterError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if value is not None:
            raise ParameterError(f"give --preset {preset} or --min-area, not both")
        return PRESETS[key]
    if value is None:
        return DEFAULT_MIN_AREA_HA
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        ha = float(value)
    else:
        m = _AREA.fullmatch(str(value).strip().lower())
        if not m:
            raise ParameterError(
                f"--min-area {value!r} needs a unit; give e.g. 0.3ha, 3000m2 or 0.01km2 (0 keeps every patch)"
            )
        ha = float(m.group(1)) * _HA_PER_UNIT[m.group(2)]
    if not math.isfinite(ha) or ha < 0:
        raise ParameterError(f"--min-area {value!r} must be a non-negative area, e.g. 0.3ha")
    return ha


def _vectorize_loss(change_path: str, raw: Path, *, connectivity: int, workers: int, scheduler: str,
                    block_size: int) -> int:
    """Polygonize the ``forest_loss`` class into the temporary ``raw`` GeoPackage; returns its feature count."""
    import warnings

    from geoseg.vector.api import vectorize_raster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vres = vectorize_raster(change_path, raw, layer=LOSS_LAYER, classes=["forest_loss"],
                                connectivity=connectivity, block_size=max(block_size, 256), workers=workers,
                                scheduler=scheduler, overwrite=True, progress=False, style=False)  # a temporary
    return vres.features


def _pixel_transform(transform: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    """Map coordinates -> pixel coordinates (for ``shapely.transform``)."""
    from affine import Affine

    inv = ~Affine(*transform[:6])
    a, b, c, d, e, f = inv.a, inv.b, inv.c, inv.d, inv.e, inv.f

    def to_pixels(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return to_pixels


def _read_chunk(raw: Path, start: int, features: int, crs: Any) -> Any:
    """Features ``start`` .. ``start + POLYGON_CHUNK`` of the raw polygons (an empty frame when none)."""
    import geopandas as gpd
    import pyogrio

    gdf = pyogrio.read_dataframe(raw, layer=LOSS_LAYER, skip_features=start, max_features=POLYGON_CHUNK) \
        if features else None
    if gdf is None or gdf.empty:
        gdf = gpd.GeoDataFrame({"id": np.zeros(0, np.int64), "area_m2": np.zeros(0)},
                               geometry=gpd.GeoSeries([], crs=crs))
    return gdf


def _loss_frame(gdf: Any, crs: Any, to_pixels: Callable[[np.ndarray], np.ndarray], to_wgs84: Any) -> Any:
    """The loss.gpkg columns of the kept polygons: id, areas, n_pixels, perimeter, WGS84 centroid."""
    import geopandas as gpd
    import shapely

    geoms = gdf.geometry.to_numpy()
    n_pixels = np.rint(shapely.area(shapely.transform(geoms, to_pixels))).astype(np.int64) if len(geoms) \
        else np.zeros(0, np.int64)
    cent = shapely.centroid(geoms) if len(geoms) else np.zeros(0, dtype=object)
    lon, lat = to_wgs84.transform(shapely.get_x(cent), shapely.get_y(cent)) if len(geoms) \
        else (np.zeros(0), np.zeros(0))
    return gpd.GeoDataFrame(
        {
            "id": gdf["id"].to_numpy(dtype=np.int64),
            "area_ha": np.round(gdf["area_m2"].to_numpy(dtype=float) / 1e4, 6),
            "area_m2": np.round(gdf["area_m2"].to_numpy(dtype=float), 3),
            "n_pixels": n_pixels,
            "perimeter_m": np.round(gdf["perimeter_m"].to_numpy(dtype=float), 3) if "perimeter_m" in gdf
            else np.zeros(len(gdf)),
            "centroid_lon": np.round(np.asarray(lon, dtype=float), 7),
            "centroid_lat": np.round(np.asarray(lat, dtype=float), 7),
        },
        geometry=gpd.GeoSeries(geoms, crs=crs),
    )


def loss_polygons(change_path: str, work_dir: Path, final_tmp: Path, *, min_area_ha: float, connectivity: int,
                  transform: Sequence[float], crs_wkt: str, workers: int, scheduler: str,
                  block_size: int) -> tuple[int, float, int]:
    """Vectorize forest loss, drop patches under the MMU, add n_pixels/centroid; write ``final_tmp``.

    Returns (polygons kept, their area ha, polygons dropped by the MMU).
    """
    import pyogrio
    from pyproj import CRS as PCRS
    from pyproj import Transformer

    raw = work_dir / "loss-raw.gpkg"
    features = _vectorize_loss(change_path, raw, connectivity=connectivity, workers=workers, scheduler=scheduler,
                               block_size=block_size)
    to_pixels = _pixel_transform(transform)
    crs = PCRS.from_wkt(crs_wkt)
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    kept = dropped = 0
    kept_ha = 0.0
    written = False
    min_m2 = min_area_ha * 1e4 * (1 - 1e-9)
    for start in range(0, max(features, 1), POLYGON_CHUNK):
        gdf = _read_chunk(raw, start, features, crs)
        small = gdf["area_m2"].to_numpy(dtype=float) < min_m2
        dropped += int(small.sum())
        out = _loss_frame(gdf.loc[~small], crs, to_pixels, to_wgs84)
        if len(out) or not written:
            pyogrio.write_dataframe(out, final_tmp, layer=LOSS_LAYER, driver="GPKG", geometry_type="MultiPolygon",
                                    append=written, dataset_options=None if written else GPKG_DATASET_OPTIONS)
            written = True
        kept += len(out)
        kept_ha += float(out["area_m2"].sum()) / 1e4
    return kept, kept_ha, dropped
