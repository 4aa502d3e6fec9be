"""Product readers (geoseg.io.sources): SAFE folder/zip, STAC Item, Landsat; the VRT contract; errors."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import rasterio

from geoseg import testing_sources as ts
from geoseg.errors import (
    GridMismatchError,
    InputError,
    InputFileError,
    MissingBandError,
    NotAProductError,
    UnreadableBandError,
)
from geoseg.io.sources import SceneSource, canonical_band, open_source

pytestmark = pytest.mark.skipif(not ts.SAMPLE.exists(), reason="the shipped Hong Kong sample is absent")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return ts.write_reference(tmp_path_factory.mktemp("ref") / "reference.tif", size=120)


@pytest.fixture(scope="module")
def stacked(ref, tmp_path_factory):
    return ts.write_stacked(tmp_path_factory.mktemp("stacked") / "stacked.tif", ref)


def _read(source: SceneSource) -> tuple[np.ndarray, rasterio.profiles.Profile, dict, tuple, tuple, tuple]:
    with rasterio.open(source.dataset) as src:
        return src.read(), src.profile, src.tags(), src.scales, src.offsets, src.descriptions


@pytest.mark.parametrize("alias", ["B2", "B02", "b02", "blue", "SR_B2", "Blue"])
def test_alias_table(alias):
    assert canonical_band(alias) == "B2"
    assert canonical_band("rededge1") == "B5" and canonical_band("B8A") == canonical_band("nir08") == "B8A"
    assert canonical_band("swir16") == "B11" and canonical_band("nir") == "B8" and canonical_band("TCI") is None


def test_plain_raster_is_none(ref):
    assert open_source(ref) is None


@pytest.mark.parametrize("variant", ["folder", "zip", "l2a"])
def test_safe_baseline_0204_reads_the_stacked_pixels(variant, ref, stacked, tmp_path):
    safe = ts.write_safe(tmp_path, ref, as_zip=variant == "zip", level="L2A" if variant == "l2a" else "L1C")
    source = open_source(safe, bands=ts.REFERENCE_BANDS)
    assert isinstance(source, SceneSource)
    data, profile, tags, scales, offsets, descriptions = _read(source)
    with rasterio.open(stacked) as src:
        np.testing.assert_array_equal(data, src.read())
        assert profile["crs"] == src.crs and profile["transform"] == src.transform
    assert descriptions == ts.REFERENCE_BANDS == source.band_names
    assert scales == (1e-4,) * 9 and offsets == (0.0,) * 9 and profile["nodata"] == 0
    level = "L2A" if variant == "l2a" else "L1C"
    assert (source.sensor, source.level, source.acquired) == ("sentinel-2", level, ts.SENSING_TIME)
    assert tags["GEOSEG_SENSOR"] == "sentinel-2" and tags["GEOSEG_LEVEL"] == level
    assert tags["GEOSEG_QUANTITY"] == ("toa_reflectance" if level == "L1C" else "surface_reflectance")
    assert tags["SENSING_TIME"] == ts.SENSING_TIME
    assert source.metadata["tile_id"] == "49QHE" and source.metadata["processing_baseline"] == "02.04"
    assert source.metadata["cloud_cover"] == "3.2"


def test_safe_baseline_0400_declares_the_offset(ref, stacked, tmp_path):
    source = open_source(ts.write_safe(tmp_path, ref, baseline="04.00"), bands=ts.REFERENCE_BANDS)
    data, _, _, scales, offsets, _ = _read(source)
    with rasterio.open(stacked) as src:
        expected = src.read().astype("int64")
    np.testing.assert_array_equal(data.astype("int64"), np.where(expected > 0, expected + 1000, 0))
    assert scales == (1e-4,) * 9 and offsets == pytest.approx((-0.1,) * 9)
    assert source.metadata["processing_baseline"] == "04.00"


def test_safe_all_bands_on_the_10m_grid(ref, tmp_path):
    source = open_source(ts.write_safe(tmp_path, ref))
    assert source.band_names == ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
    with rasterio.open(source.dataset) as src:
        assert (src.width, src.height, src.res) == (120, 120, (10.0, 10.0))
        window = src.read(window=((30, 50), (40, 70)))  # a windowed read of the resampled bands
        assert window.shape == (13, 20, 30) and (window > 0).all()
    assert 'resampling="bilinear"' in source.dataset


def test_safe_missing_band_is_named(ref, tmp_path):
    safe = ts.write_safe(tmp_path, ref, drop=("B5",))
    with pytest.raises(MissingBandError, match=r"has no band B5 .*use a complete product") as err:
        open_source(safe, bands=ts.REFERENCE_BANDS)
    assert "\n" not in str(err.value) and isinstance(err.value, InputFileError)
    with pytest.raises(MissingBandError, match="no band B5"):
        open_source(safe)


def test_zip_that_is_not_a_safe(tmp_path):
    z = tmp_path / "scene.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("scene/readme.txt", "hello")
    with pytest.raises(NotAProductError, match="holds no Sentinel-2 .SAFE product"):
        open_source(z)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="not a readable zip"):
        open_source(tmp_path / "broken.zip")


def test_truncated_jp2(ref, tmp_path):
    safe = ts.write_safe(tmp_path, ref)
    jp2 = next(safe.rglob("*_B03.jp2"))
    jp2.write_bytes(jp2.read_bytes()[:200])
    with pytest.raises(UnreadableBandError, match=r"cannot read band B3 .*download the product again") as err:
        open_source(safe, bands=ts.REFERENCE_BANDS)
    assert "\n" not in str(err.value)


def test_bands_in_different_crss(ref, tmp_path):
    safe = ts.write_safe(tmp_path, ref)
    jp2 = next(safe.rglob("*_B04.jp2"))
    with rasterio.open(jp2) as src:
        data, profile = src.read(), src.profile
    profile.update(crs="EPSG:32650")
    jp2.unlink()
    with rasterio.open(jp2, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(GridMismatchError, match="band B4 is in a different CRS"):
        open_source(safe, bands=ts.REFERENCE_BANDS)


def test_safe_folder_without_metadata(tmp_path):
    (tmp_path / "x.SAFE").mkdir()
    with pytest.raises(NotAProductError, match="not a Sentinel-2 SAFE product"):
        open_source(tmp_path / "x.SAFE")


@pytest.mark.parametrize("style", ["earth-search", "planetary-computer", "stac-1.1"])
def test_stac_item_reads_the_stacked_pixels(style, ref, stacked, tmp_path):
    item = ts.write_stac_item(tmp_path, ref, style=style, absolute=style == "stac-1.1")
    with rasterio.open(next(tmp_path.glob("B05.tif"))) as src:
        assert src.res == (20.0, 20.0)  # the 20 m bands stay at 20 m
    source = open_source(item, bands=ts.REFERENCE_BANDS)
    data, _, tags, scales, offsets, descriptions = _read(source)
    with rasterio.open(stacked) as src:
        np.testing.assert_array_equal(data, src.read())
    assert descriptions == ts.REFERENCE_BANDS and scales == (1e-4,) * 9 and offsets == (0.0,) * 9
    assert (source.sensor, source.level, source.acquired) == ("sentinel-2", "L1C", ts.SENSING_TIME)
    assert tags["GEOSEG_QUANTITY"] == "toa_reflectance" and source.metadata["tile_id"] == "49QHE"
    assert open_source(item).band_names == ts.REFERENCE_BANDS  # default: every band asset, S2 order


def test_stac_item_offset_from_raster_bands(ref, tmp_path):
    source = open_source(ts.write_stac_item(tmp_path, ref, add_offset=True), bands=["blue", "B03", "red"])
    _, _, _, scales, offsets, descriptions = _read(source)
    assert descriptions == ("B2", "B3", "B4") and offsets == pytest.approx((-0.1,) * 3)


def test_stac_missing_asset_href_is_named(ref, tmp_path):
    item = ts.write_stac_item(tmp_path, ref)
    (tmp_path / "B11.tif").unlink()
    with pytest.raises(MissingBandError, match=r"the asset of band B11 \(\./B11\.tif\) does not exist") as err:
        open_source(item, bands=ts.REFERENCE_BANDS)
    assert isinstance(err.value, FileNotFoundError)


def test_stac_no_usable_band(tmp_path):
    item = tmp_path / "item.json"
    item.write_text(json.dumps({"type": "Feature", "properties": {}, "assets": {
        "thumbnail": {"href": "t.jpg", "type": "image/jpeg"}, "SCL": {"href": "s.tif", "type": "image/tiff"}}}))
    with pytest.raises(NotAProductError, match="no asset of this STAC Item is a known spectral band"):
        open_source(item)
    (tmp_path / "c.json").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(NotAProductError, match="is not a STAC Item"):
        open_source(tmp_path / "c.json")


def test_reader_vrt_is_a_path_too(ref, tmp_path):
    source = open_source(ts.write_safe(tmp_path, ref), bands=["B2", "B3"])
    vrt = source.write_vrt(str(tmp_path / "scene.vrt"))
    with rasterio.open(vrt) as src:
        assert src.count == 2 and src.descriptions == ("B2", "B3")
    shutil.rmtree(next(tmp_path.glob("*.SAFE")))


@pytest.mark.parametrize("spacecraft", ["LANDSAT_8", "LANDSAT_9"])
def test_landsat_c2_l2_folder(spacecraft, ref, tmp_path):
    folder = ts.write_landsat(tmp_path, ref, spacecraft=spacecraft)
    source = open_source(folder)
    assert isinstance(source, SceneSource)
    assert source.band_names == ("B1", "B2", "B3", "B4", "B8A", "B11", "B12")  # SR_B1..7 through the alias table
    assert (source.sensor, source.level, source.quantity) == (spacecraft.lower().replace("_", "-"), "L2",
                                                              "surface_reflectance")
    assert source.acquired == "2016-09-27T" + ts.LANDSAT_TIME
    assert source.metadata["cloud_cover"] == "18.45" and source.metadata["wrs_path"] == "122"
    data, profile, tags, scales, offsets, descriptions = _read(source)
    # the Level-2 scale/offset, not the Level-1 TOA REFLECTANCE_* of the same MTL
    assert scales == pytest.approx((2.75e-05,) * 7) and offsets == pytest.approx((-0.2,) * 7)
    assert profile["nodata"] == 0 and profile["transform"].a == 30.0 and data.shape == (7, 40, 40)
    assert tags["GEOSEG_SENSOR"] == source.sensor and tags["SENSING_TIME"] == source.acquired
    fill = ts.landsat_fill_columns(120)
    assert (data[:, :, -fill:] == 0).all() and (data[:, :, :-fill] > 0).all()
    with rasterio.open(ref) as src:  # reflectance = DN * scale + offset: the reference's 30 m means
        blue = src.read(1).astype("float64").reshape(40, 3, 40, 3).mean(axis=(1, 3)) / 10000
    reflectance = data[1, :, :-fill] * scales[1] + offsets[1]
    np.testing.assert_allclose(reflectance, blue[:, :-fill], atol=2.75e-05)
    assert open_source(folder, bands=["blue", "nir08"]).band_names == ("B2", "B8A")
