"""``io.inputs.open_input``: what a SCENE argument may be, and the one-line errors for what it may not."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import InputError, InputFileError
from geoseg.io.inputs import open_input, read_band_files
from geoseg.testing import write_raster


def _two_table_geopackage(path) -> None:
    """A real zero-band GDAL dataset: a GeoPackage with two raster tables opens as 0 bands + 2 subdatasets."""
    data = np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64)
    profile = {"driver": "GPKG", "width": 64, "height": 64, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(10, 0, 500000, 0, -10, 5000000)}
    with rasterio.open(path, "w", RASTER_TABLE="a", **profile) as dst:
        dst.write(data)
    with rasterio.open(path, "w", RASTER_TABLE="b", APPEND_SUBDATASET="YES", **profile) as dst:
        dst.write(data)


def test_a_dataset_without_raster_bands_is_a_clear_error(tmp_path):
    gpkg = tmp_path / "two.gpkg"
    _two_table_geopackage(gpkg)
    with rasterio.open(gpkg) as src:
        assert src.count == 0 and len(src.subdatasets) == 2  # the case that used to crash with an IndexError
    with pytest.raises(InputError, match="has no raster band"):
        open_input(gpkg)
    res = CliRunner().invoke(cli, ["predict", str(gpkg), "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "has no raster band" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_plain_raster_is_opened_as_itself(tmp_path):
    path = write_raster(tmp_path / "s.tif", np.ones((4, 8, 8), np.uint16), descriptions=("B2", "B3", "B4", "B8"))
    info, source = open_input(path)
    assert source is None and info.dataset is None
    assert info.gdal_name == str(path.resolve()) and info.path == str(path)


def test_a_folder_that_is_no_product(tmp_path):
    with pytest.raises(InputFileError, match="is a directory; give a GeoTIFF file, a Sentinel-2 .SAFE folder"):
        open_input(tmp_path)


def _band(path, res: int, n: int) -> str:
    profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "uint16", "crs": "EPSG:32633",
               "transform": Affine(res, 0, 500000, 0, -res, 5000000), "nodata": 0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, n, n), 1500, np.uint16))
        dst.scales, dst.offsets = (1e-4,), (-0.1,)
    return str(path)


def test_band_files_keep_each_files_scale_and_nodata(tmp_path):
    files = {"B5": _band(tmp_path / "b05.tif", 20, 30), "B2": _band(tmp_path / "b02.tif", 10, 60)}
    source = read_band_files(files)
    assert source.band_names == ("B2", "B5")  # Sentinel-2 order, whatever order they were given in
    with rasterio.open(source.dataset) as src:
        assert src.count == 2 and src.res == (10.0, 10.0) and src.shape == (60, 60)  # B5 onto B2's 10 m grid
        assert src.scales == (1e-4, 1e-4) and src.offsets == (-0.1, -0.1)
        assert src.nodatavals == (0.0, 0.0)
        assert src.descriptions == ("B2", "B5")


def test_a_product_read_gets_a_block_cache_for_two_rows_of_its_band_blocks(tmp_path):
    from geoseg.io.inputs import MAX_CACHE_BYTES, gdal_cache_for
    from geoseg.io.raster import GDAL_CACHE_BYTES
    from geoseg.io.sources.vrt import row_cache_bytes
    from geoseg.testing_sources import write_reference, write_safe

    safe = write_safe(tmp_path, write_reference(tmp_path / "ref.tif", size=60))
    info, source = open_input(safe, wanted=("B2", "B5"))
    assert source is not None
    # B2: 60 px wide at 10 m, B5: 30 px at 20 m; one block row each (the fixture's JP2 is one block), uint16
    assert row_cache_bytes(info.dataset) == (60 * 60 + 30 * 30) * 2
    assert gdal_cache_for(info) == GDAL_CACHE_BYTES  # small: the default floor
    assert GDAL_CACHE_BYTES <= gdal_cache_for(info) <= MAX_CACHE_BYTES
    plain, _ = open_input(write_raster(tmp_path / "s.tif", np.ones((4, 8, 8), np.uint16)))
    assert gdal_cache_for(plain) == GDAL_CACHE_BYTES


def test_the_shared_dataset_is_opened_once_per_run_and_released(tmp_path):
    from geoseg.io.raster import release_shared, shared_dataset

    path = str(write_raster(tmp_path / "s.tif", np.ones((4, 8, 8), np.uint16)))
    with shared_dataset(path, "run-a") as a:
        pass
    with shared_dataset(path, "run-a") as b:
        assert b is a and not a.closed
    with shared_dataset(path, "run-b") as c:
        assert c is not a and a.closed  # a new run never sees the last run's handle
    release_shared()
    assert c.closed
