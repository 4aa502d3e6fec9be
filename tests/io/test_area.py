"""Ground areas whatever the CRS: UTM is trusted, Web Mercator and geographic grids are measured on the
ellipsoid (known answers: a Web Mercator pixel of side s at latitude φ covers about (s·cos φ)² m²)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer

from geoseg.io.area import area_model, pixel_area_m2, projected_area_ratio
from geoseg.testing import write_raster

LAT = 22.3  # Hong Kong
UTM50N = "EPSG:32650"


def _mercator_origin(lat: float = LAT, lon: float = 114.2) -> tuple[float, float]:
    return Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)


def test_utm_pixels_keep_their_exact_grid_area():
    from rasterio.crs import CRS

    t = (10.0, 0.0, 500_000.0, 0.0, -10.0, 2_470_000.0)
    wkt = CRS.from_string(UTM50N).to_wkt()
    assert pixel_area_m2(wkt, t, 1000, 1000) == 100.0
    assert abs(projected_area_ratio(wkt, t, 1000, 1000) - 1) < 0.001
    assert area_model(wkt, t, 1000, 1000).kind == "projected"


def test_web_mercator_pixels_are_measured_on_the_ground():
    from rasterio.crs import CRS

    x, y = _mercator_origin()
    t = (10.0, 0.0, x, 0.0, -10.0, y)
    wkt = CRS.from_epsg(3857).to_wkt()
    ground = pixel_area_m2(wkt, t, 100, 100)
    expected = (10 * math.cos(math.radians(LAT))) ** 2
    assert abs(ground / expected - 1) < 0.01, (ground, expected)
    assert projected_area_ratio(wkt, t, 100, 100) > 1.15  # the grid area is inflated by ~17 %
    model = area_model(wkt, t, 100, 100)
    assert model.kind == "laea"
    # a 1 km x 1 km (on the grid) square measures like the pixel area says, not 1 km²
    sq = shapely.box(x, y - 1000, x + 1000, y)
    area, _ = model.measure(np.array([sq]))
    assert abs(area[0] / (ground * 10_000) - 1) < 0.01


def test_vectorize_and_change_report_ground_areas_in_web_mercator(tmp_path):
    from geoseg import detect_change, vectorize_raster

    x, y = _mercator_origin()
    classes = np.zeros((100, 100), np.uint8)
    classes[:50] = 1
    kw = dict(crs="EPSG:3857", transform=Affine(10, 0, x, 0, -10, y), nodata=255)
    before = write_raster(tmp_path / "before.tif", np.ones((100, 100), np.uint8), **kw)
    after = write_raster(tmp_path / "after.tif", classes, **kw)
    ground_pixel = (10 * math.cos(math.radians(LAT))) ** 2
    res = vectorize_raster(after, tmp_path / "lc.gpkg", workers=1, scheduler="synchronous", progress=False)
    by_value = {row.value: row for row in res.summary}
    assert abs(by_value[1].area_ha / (5000 * ground_pixel / 1e4) - 1) < 0.01, by_value[1]
    ch = detect_change(before, after, tmp_path / "change", forest=[1], workers=1, scheduler="synchronous",
                       progress=False)
    assert abs(ch.pixel_area_m2 / ground_pixel - 1) < 0.01, ch.pixel_area_m2
    assert abs(ch.loss_ha / (5000 * ground_pixel / 1e4) - 1) < 0.01


@pytest.mark.parametrize("crs", ["EPSG:3857", UTM50N])
def test_monitoring_alert_areas_are_ground_areas(crs):
    from rasterio.crs import CRS

    from geoseg.io.warp import Grid
    from geoseg.monitoring.alerts import _area_ha

    x, y = _mercator_origin() if crs == "EPSG:3857" else (500_000.0, 2_470_000.0)
    grid = Grid(CRS.from_string(crs).to_wkt(), (10.0, 0.0, x, 0.0, -10.0, y), 100, 100)
    sq = shapely.box(x, y - 1000, x + 1000, y)  # 100 x 100 pixels
    ground_pixel = pixel_area_m2(grid.crs_wkt, grid.transform, 100, 100)
    assert abs(_area_ha([sq], grid)[0] / (10_000 * ground_pixel / 1e4) - 1) < 0.01
