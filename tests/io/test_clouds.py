"""Cloud masks (geoseg.io.clouds): each product's own mask read back on the scene's grid exactly where the
fixture put its known regions (testing_sources.cloud_boxes), windows overhanging the raster, the user's
``--cloud-mask`` raster on the scene's grid and on another CRS, and each bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

from geoseg import testing_sources as ts
from geoseg.errors import CloudMaskError, InputFileError, MissingCloudMaskError, UnreadableBandError
from geoseg.io.clouds import CloudMask, read_cloud_mask, user_cloud_mask
from geoseg.io.grid import Window
from geoseg.io.sources import open_source

pytestmark = pytest.mark.skipif(not ts.SAMPLE.exists(), reason="the shipped Hong Kong sample is absent")

SIZE = 120  # 10 m pixels: 60 px at 20 m, 20 px at 60 m, 40 px at 30 m
BOXES = ts.cloud_boxes(SIZE)
#: which known regions each kind masks (snow never; shadows only where the product has them)
MASKED = {"scl": ("cloud", "haze", "shadow", "cirrus", "defective"), "msk_classi": ("cloud", "haze", "cirrus"),
          "msk_clouds": ("cloud", "haze", "cirrus"), "qa_pixel": ("cloud", "haze", "shadow", "cirrus")}
FULL = Window(0, 0, SIZE, SIZE)


def expected(kind: str, factor: int, out: int = SIZE) -> np.ndarray:
    """The regions ``kind`` masks, rasterised at ``factor`` x 10 m as the product's own mask is, then seen
    on a grid of ``out`` pixels of ``SIZE * 10 / out`` m (nearest: each fine pixel takes its coarse one)."""
    n = SIZE // factor
    coarse = np.zeros((n, n), bool)
    for name in MASKED[kind]:
        coarse |= ts.box_mask(BOXES[name], factor, (n, n))
    rep = out // n
    return np.repeat(np.repeat(coarse, rep, axis=0), rep, axis=1)


def assert_edges_within(mask: np.ndarray, box: tuple[int, int, int, int], tol: int) -> None:
    """The masked pixels near ``box`` (10 m pixels) span the box to within ``tol`` pixels on every edge."""
    r0, c0, r1, c1 = (max(0, box[0] - 2 * tol), max(0, box[1] - 2 * tol), box[2] + 2 * tol, box[3] + 2 * tol)
    rows, cols = np.nonzero(mask[r0:r1, c0:c1])
    assert rows.size, f"nothing masked near {box}"
    got = (rows.min() + r0, cols.min() + c0, rows.max() + r0 + 1, cols.max() + c0 + 1)
    assert all(abs(g - b) < tol for g, b in zip(got, box, strict=True)), (got, box)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return ts.write_reference(tmp_path_factory.mktemp("ref") / "reference.tif", size=SIZE)


@pytest.fixture(scope="module")
def products(ref, tmp_path_factory):
    """One of each product, written once (they are only read)."""
    out = {}
    for key, kw in {"l2a": dict(level="L2A"), "l2a_zip_0510": dict(level="L2A", baseline="05.10", as_zip=True),
                    "l1c_0400": dict(level="L1C", baseline="04.00"), "l1c_0204": dict(level="L1C"),
                    "l1c_0204_zip": dict(level="L1C", as_zip=True)}.items():
        out[key] = ts.write_safe(tmp_path_factory.mktemp(key), ref, **kw)
    out["stac_es"] = ts.write_stac_item(tmp_path_factory.mktemp("es"), ref, level="L2A")
    out["stac_pc"] = ts.write_stac_item(tmp_path_factory.mktemp("pc"), ref, level="L2A", style="planetary-computer")
    out["landsat"] = ts.write_landsat(tmp_path_factory.mktemp("ls"), ref)
    return out


def _grid(source) -> tuple[str, tuple, int, int]:
    with rasterio.open(source.dataset) as src:
        return src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height


@pytest.mark.parametrize("key", ["l2a", "l2a_zip_0510"])
def test_l2a_scl_20m_nearest_onto_10m(key, products):
    source = open_source(products[key], bands=ts.REFERENCE_BANDS)
    mask = source.cloud_mask
    assert mask.kind == "scl" and mask.origin.endswith("_SCL_20m.jp2")  # the 20 m SCL, not the 60 m one
    assert mask.masked_values == (0, 1, 3, 8, 9, 10)
    assert 'resampling="nearest"' in mask.dataset and "bilinear" not in mask.dataset
    with rasterio.open(mask.dataset) as m, rasterio.open(source.dataset) as s:
        assert (m.crs, m.transform, m.width, m.height) == (s.crs, s.transform, s.width, s.height)
    got = read_cloud_mask(mask, FULL)
    assert got.dtype == bool and got.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(got, expected("scl", 2))
    for box in (BOXES["cloud"][:2] + BOXES["haze"][2:], BOXES["shadow"], BOXES["cirrus"], BOXES["defective"]):
        assert_edges_within(got, box, 2)  # the known rectangles, to within one 20 m pixel
    r0, c0, r1, c1 = BOXES["snow"]
    assert not got[r0 + 2:r1 - 2, c0 + 2:c1 - 2].any()  # snow is observed


def test_l1c_msk_classi_opaque_and_cirrus_not_snow(products):
    mask = open_source(products["l1c_0400"]).cloud_mask
    assert (mask.kind, mask.masked_bits) == ("msk_classi", (0, 1)) and mask.origin.endswith("MSK_CLASSI_B00.jp2")
    got = read_cloud_mask(mask, FULL)
    np.testing.assert_array_equal(got, expected("msk_classi", 6))
    assert_edges_within(got, BOXES["cirrus"], 6)
    assert mask.describe() == "L1C MSK_CLASSI opaque clouds, cirrus (snow/ice not masked)"


@pytest.mark.parametrize("key", ["l1c_0204", "l1c_0204_zip"])
def test_l1c_msk_clouds_gml_rasterised_per_window(key, products):
    source = open_source(products[key])
    mask = source.cloud_mask
    assert mask.kind == "msk_clouds" and mask.origin.endswith("MSK_CLOUDS_B00.gml")
    assert mask.origin.startswith("/vsizip/") == key.endswith("zip")
    got = read_cloud_mask(mask, FULL)
    np.testing.assert_array_equal(got, expected("msk_clouds", 6))
    # window by window gives the same pixels as the whole scene
    pieces = np.block([[read_cloud_mask(mask, Window(r, c, 50, 50))[: SIZE - r, : SIZE - c]
                        for c in range(0, SIZE, 50)] for r in range(0, SIZE, 50)])
    np.testing.assert_array_equal(pieces, got)


def test_cloud_free_gml_masks_nothing(ref, tmp_path):
    mask = open_source(ts.write_safe(tmp_path, ref, masks="empty")).cloud_mask
    assert mask.kind == "msk_clouds" and not read_cloud_mask(mask, FULL).any()


@pytest.mark.parametrize("key", ["stac_es", "stac_pc"])
def test_stac_item_scl_asset(key, products):
    mask = open_source(products[key]).cloud_mask
    assert mask.kind == "scl" and mask.origin.endswith("SCL.tif")
    np.testing.assert_array_equal(read_cloud_mask(mask, FULL), expected("scl", 2))


def test_landsat_qa_pixel_bits(products):
    source = open_source(products["landsat"])
    mask = source.cloud_mask
    assert (mask.kind, mask.masked_bits) == ("qa_pixel", (1, 2, 3, 4))
    n = SIZE // 3
    got = read_cloud_mask(mask, Window(0, 0, n, n))
    np.testing.assert_array_equal(got, expected("qa_pixel", 3, out=n))
    fill = ts.landsat_fill_columns(SIZE)
    assert not got[:, n - fill:].any()  # fill is the bands' nodata, not a cloud
    assert mask.describe() == "Landsat QA_PIXEL bits 1,2,3,4 (dilated cloud, cirrus, cloud, cloud shadow)"


@pytest.mark.parametrize("key", ["l2a", "l1c_0204", "landsat"])
def test_windows_overhanging_the_raster(key, products):
    mask = open_source(products[key]).cloud_mask
    with rasterio.open(mask.dataset) as src:
        h, w = src.height, src.width
    whole = read_cloud_mask(mask, Window(0, 0, h, w))
    assert whole.any()
    padded = np.zeros((h + 60, w + 60), bool)
    padded[30:30 + h, 30:30 + w] = whole
    for win in (Window(-30, -30, 70, 80), Window(h - 40, w - 45, 60, 60), Window(-30, w - 10, h + 60, 40)):
        got = read_cloud_mask(mask, win)
        assert got.shape == (win.height, win.width)
        np.testing.assert_array_equal(got, padded[win.row_off + 30:win.row_end + 30, win.col_off + 30:win.col_end + 30])
    assert not read_cloud_mask(mask, Window(h + 5, 0, 10, 10)).any()  # wholly outside: all False


def test_missing_mask_files_give_none(ref, tmp_path):
    for level in ("L1C", "L2A"):
        assert open_source(ts.write_safe(tmp_path / level, ref, level=level, masks="none")).cloud_mask is None
    assert open_source(ts.write_stac_item(tmp_path / "l1c", ref)).cloud_mask is None  # an L1C Item has no SCL
    item = ts.write_stac_item(tmp_path / "l2a", ref, level="L2A")
    (tmp_path / "l2a" / "SCL.tif").unlink()  # the SCL asset was not downloaded
    assert open_source(item).cloud_mask is None
    assert open_source(ts.write_landsat(tmp_path / "ls", ref, qa=False)).cloud_mask is None


def test_damaged_masks_are_errors(ref, tmp_path):
    safe = ts.write_safe(tmp_path / "a", ref, level="L2A")
    scl = next(safe.rglob("*_SCL_20m.jp2"))
    scl.write_bytes(scl.read_bytes()[:200])
    with pytest.raises(UnreadableBandError, match=r"cannot read band SCL .*download the product again"):
        open_source(safe)
    safe = ts.write_safe(tmp_path / "b", ref)
    next(safe.rglob("MSK_CLOUDS_B00.gml")).write_text("<eop:Mask", encoding="utf-8")
    with pytest.raises(CloudMaskError, match="MSK_CLOUDS_B00.gml .*download it again") as err:
        open_source(safe)
    assert "\n" not in str(err.value)


def test_cloud_mask_value_contract(products):
    mask = open_source(products["l2a"]).cloud_mask
    assert mask.describe().startswith("L2A SCL classes 0,1,3,8,9,10 (no data, saturated or defective, cloud "
                                      "shadows, cloud medium probability, cloud high probability, thin cirrus)")
    doc = mask.to_json()
    assert doc["kind"] == "scl" and doc["values"] == [0, 1, 3, 8, 9, 10] and doc["bits"] == [] and doc["band"] == 1
    assert doc["origin"] == mask.origin and doc["description"] == mask.describe()
    again = pickle.loads(pickle.dumps(mask))  # what a dask task receives
    np.testing.assert_array_equal(read_cloud_mask(again, FULL), read_cloud_mask(mask, FULL))
    with pytest.raises(ValueError, match="kind"):
        CloudMask("x.tif", "fmask", "x.tif", nonzero=True)
    with pytest.raises(ValueError, match="needs masked_values"):
        CloudMask("x.tif", "raster", "x.tif")


# -- --cloud-mask RASTER --


def _scene(products) -> tuple[str, tuple, int, int]:
    return _grid(open_source(products["l2a"], bands=["B2"]))


def _write(path, data, crs, transform, nodata=None, dtype=None):
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=dtype or data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return str(path)


def test_user_mask_on_the_scene_grid_used_as_is(products, tmp_path):
    crs, transform, w, h = _scene(products)
    data = np.zeros((h, w), "uint8")
    data[10:30, 40:90] = 1
    data[50:60, 5:15] = 7  # any non-zero value is masked
    data[100:, :] = 255  # the mask's nodata: not masked
    path = _write(tmp_path / "m.tif", data, crs, Affine(*transform), nodata=255)
    mask = user_cloud_mask(path, crs, transform, w, h)
    assert (mask.dataset, mask.kind, mask.nonzero) == (path, "raster", True)
    np.testing.assert_array_equal(read_cloud_mask(mask, FULL), (data != 0) & (data != 255))
    got = read_cloud_mask(mask, Window(-5, 100, 30, 30))
    want = np.zeros((30, 30), bool)
    want[5:, :20] = (data[:25, 100:] != 0) & (data[:25, 100:] != 255)
    np.testing.assert_array_equal(got, want)
    assert mask.describe() == f"cloud mask {path} band 1: non-zero = masked"


def test_user_mask_on_another_grid_same_crs(products, tmp_path):
    crs, transform, w, h = _scene(products)
    coarse = np.zeros((h // 2 + 10, w // 2 + 10), "uint8")  # 20 m, 5 px margin all round
    coarse[5 + 10:5 + 25, 5 + 20:5 + 40] = 1
    t = Affine(20.0, 0.0, transform[2] - 100, 0.0, -20.0, transform[5] + 100)
    mask = user_cloud_mask(_write(tmp_path / "m20.tif", coarse, crs, t), crs, transform, w, h)
    assert mask.dataset.lstrip().startswith("<VRTDataset") and 'subClass="VRTWarpedDataset"' in mask.dataset
    want = np.zeros((h, w), bool)
    want[20:50, 40:80] = True
    np.testing.assert_array_equal(read_cloud_mask(mask, FULL), want)


def test_user_mask_on_another_crs(products, tmp_path):
    """A 0/1 mask in Web Mercator at ~5 m with a known rectangle (given in the scene's UTM): read back on
    the scene's 10 m grid through the nearest-neighbour warp, inside the rectangle's edges +- 1 pixel."""
    crs, transform, w, h = _scene(products)
    a = Affine(*transform)
    r0, c0, r1, c1 = 30, 20, 75, 95
    x0, y0 = a @ (c0, r0)
    x1, y1 = a @ (c1, r1)
    (mx0, mx1), (my0, my1) = warp_transform(CRS.from_wkt(crs), "EPSG:3857", [a.c - 50, a.c + w * 10 + 50],
                                            [a.f + 50, a.f - h * 10 - 50])
    res = 5.0
    mt = Affine(res, 0.0, mx0, 0.0, -res, my0)
    mw, mh = int((mx1 - mx0) / res), int((my0 - my1) / res)
    cols, rows = np.meshgrid(np.arange(mw) + 0.5, np.arange(mh) + 0.5)
    px, py = mt @ (cols.ravel(), rows.ravel())
    ux, uy = warp_transform("EPSG:3857", CRS.from_wkt(crs), px, py)
    inside = ((np.asarray(ux) >= x0) & (np.asarray(ux) < x1) & (np.asarray(uy) <= y0) & (np.asarray(uy) > y1))
    path = _write(tmp_path / "m3857.tif", inside.reshape(mh, mw).astype("uint8"), "EPSG:3857", mt)
    got = read_cloud_mask(user_cloud_mask(path, crs, transform, w, h), FULL)
    assert got[r0 + 1:r1 - 1, c0 + 1:c1 - 1].all()
    outside = np.ones((h, w), bool)
    outside[r0 - 1:r1 + 1, c0 - 1:c1 + 1] = False
    assert not got[outside].any()
    assert abs(int(got.sum()) - (r1 - r0) * (c1 - c0)) < 2 * ((r1 - r0) + (c1 - c0))


def test_user_mask_bad_inputs(products, tmp_path):
    crs, transform, w, h = _scene(products)
    a = Affine(*transform)
    with pytest.raises(MissingCloudMaskError, match="does not exist; pass an existing raster") as err:
        user_cloud_mask(str(tmp_path / "nope.tif"), crs, transform, w, h)
    assert isinstance(err.value, InputFileError) and isinstance(err.value, FileNotFoundError)
    (tmp_path / "notes.txt").write_text("clouds here", encoding="utf-8")
    cases = {
        "not a readable raster": str(tmp_path / "notes.txt"),
        "has 3 bands; a cloud mask has one": _write(tmp_path / "rgb.tif", np.zeros((3, h, w), "uint8"), crs, a),
        "is float32; a cloud mask is an integer raster": _write(tmp_path / "f.tif", np.zeros((h, w), "float32"),
                                                                 crs, a),
        r"covers 25% of the scene; give a mask that covers the whole scene": _write(
            tmp_path / "quarter.tif", np.zeros((h // 2, w // 2), "uint8"), crs, a),
        "has no CRS, so it must be on the scene's pixel grid": _write(
            tmp_path / "nocrs.tif", np.zeros((h // 2, w // 2), "uint8"), None, Affine(20.0, 0, a.c, 0, -20.0, a.f)),
    }
    for message, path in cases.items():
        with pytest.raises(CloudMaskError, match=message) as err:
            user_cloud_mask(path, crs, transform, w, h)
        assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_msk_classi_with_too_few_bands_is_an_error(ref, tmp_path):
    safe = ts.write_safe(tmp_path, ref, baseline="04.00")
    classi = next(safe.rglob("MSK_CLASSI_B00.jp2"))
    with rasterio.open(classi) as src:
        band1, crs, transform = src.read(1), src.crs, src.transform
    classi.unlink()
    with rasterio.open(classi, "w", driver="JP2OpenJPEG", width=band1.shape[1], height=band1.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform, QUALITY="100", REVERSIBLE="YES") as dst:
        dst.write(band1, 1)
    with pytest.raises(UnreadableBandError, match=r"MSK_CLASSI_B00.jp2 has 1 band\(s\), so no band 2"):
        open_source(safe)
