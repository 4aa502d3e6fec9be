"""geoseg.raster helpers with known answers."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.io.grid import Window
from geoseg.io.raster import pixel_area_m2, read_band

UTM = CRS.from_epsg(32633).to_wkt()
WGS84 = CRS.from_epsg(4326).to_wkt()


def test_pixel_area_projected_and_geographic():
    assert pixel_area_m2(UTM, (10.0, 0.0, 400_000.0, 0.0, -10.0, 5_200_000.0), 100, 100) == 100.0
    # a rotated 10 m grid inside the zone: |det| of the affine (at easting 0, 500 km off the central
    # meridian, UTM inflates areas by 0.54 %: geoseg.io.area then measures the ground, see tests/io/test_area.py)
    assert pixel_area_m2(UTM, (8.0, 6.0, 400_000.0, 6.0, -8.0, 5_200_000.0), 10, 10) == pytest.approx(100.0)
    # 1e-4 degree at the equator (the centre pixel of a 2x2 grid straddling it): WGS84 gives
    # 111 319.49 m per degree of longitude and 110 574.3 m per degree of latitude there
    area = pixel_area_m2(WGS84, (1e-4, 0.0, 10.0, 0.0, -1e-4, 1e-4), 2, 2)
    assert area == pytest.approx(11.131949 * 11.057427, rel=1e-4)
    # at 60 degrees north: 55 799.98 m per degree of longitude, 111 412.28 m per degree of latitude
    north = pixel_area_m2(WGS84, (1e-4, 0.0, 10.0, 0.0, -1e-4, 60.0001), 2, 2)
    assert north == pytest.approx(5.579998 * 11.141228, rel=1e-4)
    assert pixel_area_m2(None, (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), 2, 2) is None


def test_read_band_window_and_mask(tmp_path):
    data = np.arange(48, dtype=np.uint8).reshape(6, 8)
    path = tmp_path / "b.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=6, count=2, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 400_000, 0, -10, 5_200_000), nodata=5) as dst:
        dst.write(np.stack([data, data + 100]))
    with rasterio.open(path) as src:
        values, valid = read_band(src, 2, Window(1, 2, 3, 4), masked=True)
        assert values.tolist() == (data[1:4, 2:6] + 100).tolist()
        assert valid.all()  # band 2 holds no 5
        values, valid = read_band(src, 1, Window(0, 0, 2, 8), masked=True)
        assert values.tolist() == data[:2].tolist() and valid.sum() == 15 and not valid[0, 5]
        values, valid = read_band(src, 1, Window(0, 0, 2, 8), masked=False)
        assert valid.all()
