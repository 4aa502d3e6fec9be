"""COG validation (issue 6): geoseg's rasters are valid Cloud-Optimized GeoTIFFs; non-COGs fail with named problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling

from geoseg.delivery.cog_check import is_cog, validate_cog
from geoseg.predict.api import predict_scene
from geoseg.testing import pattern_scene, write_raster

TAGS = {"CLASS_0": "water", "CLASS_1": "trees", "CLASS_2": "built"}
N = 700  # > 512: the COG driver writes overviews, so IFD/data order is exercised


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, linear_model) -> Path:
    d = tmp_path_factory.mktemp("cog")
    scene, _ = pattern_scene(N, 600)
    src = write_raster(d / "scene.tif", scene, descriptions=("B2", "B3", "B4", "B8"))
    predict_scene(src, linear_model, d / "out", probabilities=True, progress=False)
    return d / "out"


def test_predict_rasters_are_cogs(predicted):
    for name in ("landcover.tif", "probabilities.tif"):
        p = predicted / name
        with rasterio.open(p) as src:
            assert src.overviews(1), f"{name} should have overviews at {src.width}x{src.height}"
        assert validate_cog(p) == [], name
        assert is_cog(p)


def test_change_raster_is_cog(tmp_path):
    from geoseg.change.api import detect_change

    b = np.zeros((N, N), np.uint8)
    b[: N // 2] = 1
    a = b.copy()
    a[10:60, 10:60] = 0
    a[600:650, 600:650] = 1
    r = detect_change(write_raster(tmp_path / "b.tif", b, nodata=255, **TAGS),
                      write_raster(tmp_path / "a.tif", a, nodata=255, **TAGS), tmp_path / "o", progress=False)
    with rasterio.open(r.change) as src:
        assert src.overviews(1)
    assert validate_cog(r.change) == []


def _monitor_test_helpers():
    """tests/monitoring/test_monitor.py's project builder, importable when this file runs on its own too
    (pytest puts a test file's folder on sys.path only when it collects that file)."""
    import importlib
    import sys

    folder = str(Path(__file__).resolve().parents[1] / "monitoring")
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module("test_monitor")


def test_monitor_gfw_raster_is_cog(tmp_path):
    tm = _monitor_test_helpers()
    DATES, _project = tm.DATES, tm._project

    from geoseg.monitoring.api import run_monitor

    run_monitor(_project(tmp_path, DATES[:3]))
    assert validate_cog(tmp_path / "out" / "aoi1" / "alerts_gfw.tif") == []


def _gtiff(path: Path, data: np.ndarray, **kw) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs="EPSG:32633", transform=rasterio.transform.from_origin(0, 0, 10, 10),
                       **kw) as dst:
        dst.write(data, 1)
    return path


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 3, (N, 900)).astype(np.uint8)


def test_striped_geotiff_fails(tmp_path, data):
    p = _gtiff(tmp_path / "striped.tif", data)
    problems = validate_cog(p)
    assert any("not tiled" in m for m in problems), problems
    assert any("no overviews" in m for m in problems), problems
    assert any("LAYOUT=COG" in m for m in problems), problems
    assert not is_cog(p)


def test_tiled_geotiff_with_external_overviews_fails(tmp_path, data):
    p = _gtiff(tmp_path / "ext.tif", data, tiled=True, blockxsize=256, blockysize=256)
    # an external overview file: GDAL reads <name>.tif.ovr as the overviews of <name>.tif
    _gtiff(tmp_path / "ext.tif.ovr", np.ascontiguousarray(data[::2, ::2]), tiled=True, blockxsize=256,
           blockysize=256)
    with rasterio.open(p) as src:
        assert src.overviews(1) == [2]  # GDAL does see them
    problems = validate_cog(p)
    assert any("external file (ext.tif.ovr)" in m for m in problems), problems
    assert any("LAYOUT=COG" in m for m in problems), problems
    assert not any("not tiled" in m for m in problems)


def test_internal_overviews_after_the_data_fail_on_order(tmp_path, data):
    """A tiled GTiff whose overviews were added afterwards: the overview data follow the full-resolution data."""
    p = _gtiff(tmp_path / "late.tif", data, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(p, "r+") as dst:
        dst.build_overviews([2, 4], Resampling.nearest)
    problems = validate_cog(p)
    assert any("full-resolution tile data" in m and "precede the overviews" in m for m in problems), problems
    # the same pixels through GDAL's COG driver are fine: the problems come from the layout only
    q = tmp_path / "fixed.tif"
    rasterio.shutil.copy(p, q, driver="COG")
    assert validate_cog(q) == []


def test_small_cog_without_overviews_is_valid_and_missing_file(tmp_path):
    p = _gtiff(tmp_path / "small.tif", np.zeros((100, 120), np.uint8), tiled=True, blockxsize=16, blockysize=16)
    q = tmp_path / "small_cog.tif"
    rasterio.shutil.copy(p, q, driver="COG")
    assert validate_cog(q) == []
    assert validate_cog(p) == ["small.tif has no LAYOUT=COG in its IMAGE_STRUCTURE metadata (found none): not "
                               "written by GDAL's COG driver"]
    assert "does not exist" in validate_cog(tmp_path / "nope.tif")[0]
