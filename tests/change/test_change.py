"""``geoseg change``: forest loss/gain on hand-made rasters with known answers.

Every raster is 10 m EPSG:32633 (conftest.write_raster); the change codes are
0 no change, 1 forest loss, 2 forest gain, 255 unobserved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from pyproj import Transformer

from geoseg.change.api import PRESETS, detect_change, parse_min_area
from geoseg.errors import EmptySceneError, GridMismatchError, InputError, OutputExistsError, ParameterError
from geoseg.testing import CRS, ORIGIN, RES, write_raster

TAGS = {"CLASS_0": "water", "CLASS_1": "trees", "CLASS_2": "built"}
H, W = 300, 280  # > one 256-px block both ways


def classes(path, data, nodata=255, tags=TAGS, **kw):
    return write_raster(path, np.asarray(data, dtype=np.uint8), nodata=nodata, **(tags or {}), **kw)


def read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def no_temporaries(out):
    return [p for p in os.listdir(out) if p.startswith(".")] == []


@pytest.fixture
def pair(tmp_path):
    """BEFORE/AFTER class rasters with every case, and the expected change codes."""
    b = np.zeros((H, W), np.uint8)  # water
    b[:150] = 1  # trees in the top half
    b[150:200] = 2  # built
    a = b.copy()
    a[10:20, 10:30] = 2  # loss: trees -> built (200 px)
    a[40:50, 40:50] = 0  # loss: trees -> water (100 px)
    a[250:270, 250:270] = 1  # gain: water -> trees (400 px)
    a[160:165, 0:10] = 1  # gain: built -> trees (50 px)
    a[60:62, 0:W] = 255  # nodata after over trees: unobserved, not "no change"
    b[280:290, 0:5] = 255  # nodata before over water
    a[100:110, 100:110] = 0
    b[100:110, 100:110] = 255  # loss in AFTER but BEFORE unobserved: unobserved
    exp = np.zeros((H, W), np.uint8)
    exp[10:20, 10:30] = 1
    exp[40:50, 40:50] = 1
    exp[250:270, 250:270] = 2
    exp[160:165, 0:10] = 2
    exp[60:62, :] = 255
    exp[280:290, 0:5] = 255
    exp[100:110, 100:110] = 255
    return classes(tmp_path / "before.tif", b), classes(tmp_path / "after.tif", a), exp


# -- pixel codes --------------------------------------------------------------------------------------


def test_codes_exact(pair, tmp_path):
    before, after, exp = pair
    r = detect_change(before, after, tmp_path / "out", block_size=256, min_area=0)
    got = read(r.change)
    np.testing.assert_array_equal(got, exp)
    assert r.pixels.loss == 300 and r.pixels.gain == 450
    assert r.pixels.unobserved == 2 * W + 50 + 100
    assert r.pixels.no_change == H * W - 300 - 450 - r.pixels.unobserved
    assert r.loss_ha == pytest.approx(3.0) and r.gain_ha == pytest.approx(4.5)
    assert r.pixel_area_m2 == pytest.approx(100.0)
    with rasterio.open(r.change) as src:
        assert src.nodata == 255 and src.crs.to_epsg() == 32633
        assert src.transform == Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
        assert src.tags(1)["CLASS_1"] == "forest_loss" and src.tags(1)["CLASS_2"] == "forest_gain"
        assert src.colormap(1)[1][:3] == (227, 26, 28)
        assert src.overviews(1) == [] or src.overviews(1)[0] == 2  # a COG (tiny: maybe no overview)
    rec = json.loads(Path(r.record).read_text())
    assert rec["pixels"]["forest_loss"] == 300 and rec["forest"]["before_values"] == [1]
    assert no_temporaries(r.out_dir)


def test_block_size_and_scheduler_do_not_matter(pair, tmp_path):
    before, after, exp = pair
    r1 = detect_change(before, after, tmp_path / "a", block_size=256, scheduler="synchronous", min_area=0)
    r2 = detect_change(before, after, tmp_path / "b", block_size=4096, workers=3, min_area=0)
    r3 = detect_change(before, after, tmp_path / "c", block_size=256, workers=2, scheduler="processes", min_area=0)
    np.testing.assert_array_equal(read(r3.change), exp)
    np.testing.assert_array_equal(read(r1.change), read(r2.change))
    np.testing.assert_array_equal(read(r1.change), exp)


@pytest.mark.parametrize("block_size,suggested", [(1000, 1024), (100, 256)])
def test_block_size_not_a_multiple_of_the_tile_is_refused_with_a_suggestion(pair, tmp_path, block_size, suggested):
    before, after, _ = pair
    with pytest.raises(ParameterError, match=f"multiple of 256.*--block-size {suggested}"):
        detect_change(before, after, tmp_path / "out", block_size=block_size)
    assert not (tmp_path / "out").exists()  # refused before the output folder is touched


def test_forest_by_value_and_per_raster_names(tmp_path):
    b = np.zeros((20, 20), np.uint8)
    b[:10] = 1
    a = np.zeros((20, 20), np.uint8)
    a[:5] = 3  # AFTER codes trees as 3
    before = classes(tmp_path / "b.tif", b)
    after = classes(tmp_path / "a.tif", a, tags={"CLASS_0": "water", "CLASS_3": "Trees"})
    r = detect_change(before, after, tmp_path / "o1", min_area=0)
    assert r.pixels.loss == 100 and r.pixels.gain == 0
    # values apply to both rasters; names need tags
    nb = classes(tmp_path / "nb.tif", b, tags=None)
    na = classes(tmp_path / "na.tif", np.where(a == 3, 1, 0), tags=None)
    with pytest.raises(ParameterError, match="--forest 1"):
        detect_change(nb, na, tmp_path / "o2")
    r = detect_change(nb, na, tmp_path / "o3", forest="1", min_area=0)
    assert r.pixels.loss == 100
    r = detect_change(nb, na, tmp_path / "o4", forest=[0, 1], min_area=0)  # everything forest: no change
    assert r.pixels.loss == r.pixels.gain == 0 and r.pixels.no_change == 400
    with pytest.raises(ParameterError, match="not a class of"):
        detect_change(before, after, tmp_path / "o5", forest="cedar")


# -- masks --------------------------------------------------------------------------------------------


def test_masks_are_honoured(pair, tmp_path):
    before, after, exp = pair
    bm = np.ones((H, W), np.uint8)
    bm[10:15, :] = 0  # clouds before over half of the 200-px loss patch
    am = np.full((H, W), 7, np.uint8)  # any nonzero is valid
    am[250:260, 250:270] = 0  # clouds after over half the 400-px gain patch
    am[0:3, 0:3] = 255  # the mask's own nodata: not valid either
    write_raster(tmp_path / "bm.tif", bm)
    write_raster(tmp_path / "am.tif", am, nodata=255)
    r = detect_change(before, after, tmp_path / "out", before_mask=tmp_path / "bm.tif",
                      after_mask=tmp_path / "am.tif", min_area=0)
    e = exp.copy()
    e[10:15, :] = 255
    e[250:260, 250:270] = 255
    e[0:3, 0:3] = 255
    np.testing.assert_array_equal(read(r.change), e)
    assert r.pixels.loss == 200 and r.pixels.gain == 250


def test_mask_on_another_grid_needs_align(pair, tmp_path):
    before, after, _ = pair
    write_raster(tmp_path / "m.tif", np.ones((10, 10), np.uint8))
    with pytest.raises(GridMismatchError, match="--align"):
        detect_change(before, after, tmp_path / "out", before_mask=tmp_path / "m.tif")


def test_nothing_observed(tmp_path):
    b = classes(tmp_path / "b.tif", np.ones((10, 10)))
    a = classes(tmp_path / "a.tif", np.full((10, 10), 255))
    with pytest.raises(EmptySceneError, match="no pixel is observed"):
        detect_change(b, a, tmp_path / "out")
    assert not (tmp_path / "out" / "change.tif").exists() and no_temporaries(tmp_path / "out")


# -- minimum mapping unit and polygons ----------------------------------------------------------------


def test_min_area_drops_small_patches_and_measures_polygons(tmp_path):
    b = np.ones((H, W), np.uint8)  # all trees
    a = b.copy()
    a[20:25, 30:36] = 0  # 30 px = 0.30 ha: kept at the default MMU (>=)
    a[50:53, 50:60] = 0  # 30 px... but 3 rows; with one pixel forest again -> 29 px: dropped
    a[51, 55] = 1
    a[100:150, 240:270] = 2  # 1500 px = 15 ha, crossing the 256-px block seam
    a[150:152, 250:252] = 2  # joined on 4-connectivity below: 1504 px
    a[200:202, 200:202] = 0  # 4 px inside an unobserved area: dropped
    a[198:204, 198:204][[0, -1]] = 255
    a[198:204, 198:204][:, [0, -1]] = 255
    before = classes(tmp_path / "b.tif", b)
    after = classes(tmp_path / "a.tif", a)
    r = detect_change(before, after, tmp_path / "out", block_size=256)
    assert r.min_area_ha == pytest.approx(0.3)
    assert r.pixels.loss == 30 + 29 + 1504 + 4
    assert r.loss_polygon_count == 2 and r.dropped_polygons == 2
    gdf = pyogrio.read_dataframe(r.loss_polygons, layer="loss").sort_values("n_pixels").reset_index(drop=True)
    assert list(gdf["n_pixels"]) == [30, 1504]
    assert list(gdf["area_ha"]) == pytest.approx([0.30, 15.04])
    assert r.loss_polygon_ha == pytest.approx(15.34)
    # centroids: pixel-space centroid -> UTM -> WGS84
    tr = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    cx, cy = ORIGIN[0] + 33.0 * RES, ORIGIN[1] - 22.5 * RES  # patch rows 20..25, cols 30..36
    lon, lat = tr.transform(cx, cy)
    assert gdf.loc[0, "centroid_lon"] == pytest.approx(lon, abs=1e-6)
    assert gdf.loc[0, "centroid_lat"] == pytest.approx(lat, abs=1e-6)
    assert 14.9 < lon < 15.1 and 45 < lat < 47  # UTM 33N near the central meridian
    assert {"id", "area_ha", "n_pixels", "centroid_lon", "centroid_lat"} <= set(gdf.columns)
    assert gdf.crs.to_epsg() == 32633
    # the raster keeps every loss pixel; only the polygons have the MMU
    assert int((read(r.change) == 1).sum()) == r.pixels.loss

    r = detect_change(before, after, tmp_path / "prodes", preset="prodes")
    assert r.min_area_ha == PRESETS["prodes"] == 6.25
    assert r.loss_polygon_count == 1 and r.loss_polygon_ha == pytest.approx(15.04)
    r = detect_change(before, after, tmp_path / "big", min_area="20ha")  # no polygon: an empty layer
    assert r.loss_polygon_count == 0
    assert len(pyogrio.read_dataframe(r.loss_polygons, layer="loss")) == 0
    r = detect_change(before, after, tmp_path / "c8", min_area=0, connectivity=8)
    assert r.loss_polygon_count == 4


def test_parse_min_area():
    assert parse_min_area(None) == 0.3
    assert parse_min_area("0.3ha") == pytest.approx(0.3)
    assert parse_min_area("3000m2") == pytest.approx(0.3)
    assert parse_min_area("0.01km2") == pytest.approx(1.0)
    assert parse_min_area(None, "prodes") == 6.25
    assert parse_min_area(2) == 2.0
    for bad in ("0.3", "abc", "-1ha"):
        with pytest.raises(ParameterError):
            parse_min_area(bad)
    with pytest.raises(ParameterError, match="not both"):
        parse_min_area("1ha", "prodes")
    with pytest.raises(ParameterError, match="unknown preset"):
        parse_min_area(None, "fao")


# -- grids --------------------------------------------------------------------------------------------


def test_grid_mismatch_and_align(tmp_path):
    b = np.zeros((40, 50), np.uint8)
    b[:, :25] = 1  # trees on the left half
    before = classes(tmp_path / "b.tif", b)
    # AFTER: 20 m pixels, shifted 40 m east; trees everywhere except its cols 0..4 (40..140 m east of BEFORE)
    a = np.ones((20, 25), np.uint8)
    a[:, 0:5] = 0
    t = Affine(2 * RES, 0, ORIGIN[0] + 4 * RES, 0, -2 * RES, ORIGIN[1])
    after = classes(tmp_path / "a.tif", a, transform=t)
    with pytest.raises(GridMismatchError, match="--align") as ei:
        detect_change(before, after, tmp_path / "o1")
    assert "\n" not in str(ei.value) and "pixel size" in str(ei.value)
    r = detect_change(before, after, tmp_path / "o2", align=True, min_area=0)
    assert r.aligned
    exp = np.zeros((40, 50), np.uint8)
    exp[:, 0:4] = 255  # outside AFTER's footprint: unobserved
    exp[:, 4:14] = 1  # AFTER cols 0..4 (water) cover BEFORE cols 4..13 (trees): loss
    exp[:, 25:50] = 2  # water -> trees: gain
    np.testing.assert_array_equal(read(r.change), exp)


def test_align_without_nodata_marks_outside_footprint(tmp_path):
    b = np.ones((30, 30), np.uint8)
    before = classes(tmp_path / "b.tif", b, nodata=None)
    t = Affine(RES, 0, ORIGIN[0] + 10 * RES, 0, -RES, ORIGIN[1] - 5 * RES)
    after = classes(tmp_path / "a.tif", np.zeros((30, 30), np.uint8), nodata=None, transform=t)
    r = detect_change(before, after, tmp_path / "o", align=True, min_area=0)
    got = read(r.change)
    exp = np.full((30, 30), 255, np.uint8)
    exp[5:, 10:] = 1
    np.testing.assert_array_equal(got, exp)


# -- probabilities ------------------------------------------------------------------------------------


def test_probability_percent_and_float(tmp_path):
    b = np.array([[80, 80, 50, 49, 255, 10]], np.uint8)
    a = np.array([[49, 50, 10, 50, 10, 255]], np.uint8)
    bp = write_raster(tmp_path / "b.tif", b, nodata=255)
    ap = write_raster(tmp_path / "a.tif", a, nodata=255)
    r = detect_change(bp, ap, tmp_path / "o1", probability=True, min_area=0)
    np.testing.assert_array_equal(read(r.change), [[1, 0, 1, 2, 255, 255]])
    r = detect_change(bp, ap, tmp_path / "o2", probability=True, threshold=80, min_area=0)
    np.testing.assert_array_equal(read(r.change), [[1, 1, 0, 0, 255, 255]])
    # float 0..1, NaN = nodata
    bf = write_raster(tmp_path / "bf.tif", (b.astype(np.float32) / 100).clip(0, 1))
    af = a.astype(np.float32) / 100
    af[0, 5] = np.nan
    af = write_raster(tmp_path / "af.tif", af.clip(0, 1))
    r = detect_change(bf, af, tmp_path / "o3", probability=True, min_area=0)
    np.testing.assert_array_equal(read(r.change), [[1, 0, 1, 2, 1, 255]])  # 255/100 clipped to 1.0: forest -> 0.1: loss
    # a multi-band probabilities.tif as geoseg writes it: the band named by --forest
    mb = np.stack([100 - b, b]).astype(np.uint8)
    mb[:, b == 255] = 255
    ma = np.stack([100 - a, a]).astype(np.uint8)
    ma[:, a == 255] = 255
    pb = write_raster(tmp_path / "pb.tif", mb, nodata=255, descriptions=("water", "trees"))
    pa = write_raster(tmp_path / "pa.tif", ma, nodata=255, descriptions=("water", "trees"))
    r = detect_change(pb, pa, tmp_path / "o4", probability=True, min_area=0)
    np.testing.assert_array_equal(read(r.change), [[1, 0, 1, 2, 255, 255]])
    with pytest.raises(InputError, match="--forest"):
        detect_change(pb, pa, tmp_path / "o5", probability=True, forest="cedar")
    # out of range values
    bad = write_raster(tmp_path / "bad.tif", np.array([[0.5, 1.7]], np.float32))
    with pytest.raises(InputError, match="outside 0..1"):
        detect_change(bad, bf, tmp_path / "o6", probability=True, align=True)
    assert os.listdir(tmp_path / "o6") == []  # the failing task's temporaries are gone


def test_probability_align_bilinear(tmp_path):
    b = np.full((20, 20), 90, np.uint8)
    bp = write_raster(tmp_path / "b.tif", b, nodata=255)
    a = np.full((10, 10), 20, np.uint8)  # 20 m pixels, same extent: bilinear of a constant is that constant
    t = Affine(2 * RES, 0, ORIGIN[0], 0, -2 * RES, ORIGIN[1])
    ap = write_raster(tmp_path / "a.tif", a, nodata=255, transform=t)
    with pytest.raises(GridMismatchError, match="bilinear"):
        detect_change(bp, ap, tmp_path / "o1", probability=True)
    r = detect_change(bp, ap, tmp_path / "o2", probability=True, align=True, min_area=0)
    assert r.pixels.loss == 400


# -- outputs and the CLI ------------------------------------------------------------------------------


def test_outputs_refused_without_overwrite(pair, tmp_path):
    before, after, _ = pair
    detect_change(before, after, tmp_path / "out")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        detect_change(before, after, tmp_path / "out")
    r = detect_change(before, after, tmp_path / "out", overwrite=True)
    assert r.pixels.loss == 300 and no_temporaries(tmp_path / "out")


def test_cli(pair, tmp_path):
    from geoseg.cli import cli

    before, after, exp = pair
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(cli, ["change", str(before), str(after), "-o", str(out), "--min-area", "1.5ha"])
    assert res.exit_code == 0, res.output
    assert "forest loss 3.00 ha" in res.output and "1 loss polygons" in res.output and "1 smaller" in res.output
    np.testing.assert_array_equal(read(out / "change.tif"), exp)
    assert json.loads((out / "change.json").read_text())["min_area_ha"] == 1.5

    def fails(args, code, text):
        r = runner.invoke(cli, ["change", *map(str, args)])
        assert r.exit_code == code, r.output
        assert text in r.output
        assert r.output.strip().count("\n") == 0 or "Usage" in r.output  # one line (click usage aside)

    fails([before, after, "-o", out], 5, "--overwrite")
    fails([before, after, "-o", out, "--overwrite", "-q"], 0, "")
    fails([tmp_path / "missing.tif", after, "-o", tmp_path / "o2"], 3, "does not exist")
    fails([before, after, "-o", tmp_path / "o3", "--min-area", "0.3"], 2, "needs a unit")
    fails([before, after, "-o", tmp_path / "o4", "--min-area", "1ha", "--preset", "prodes"], 2, "not both")
    fails([before, after, "-o", tmp_path / "o5", "--forest", "cedar"], 2, "not a class of")
    fails([before, after, "-o", tmp_path / "o6", "--probability", "--threshold", "150"], 2, "--threshold")
    fails([before, after, "-o", tmp_path / "o6", "--scheduler", "nope"], 2, "unknown scheduler")
    shifted = classes(tmp_path / "s.tif", np.zeros((H, W)),
                      transform=Affine(RES, 0, ORIGIN[0] + 5, 0, -RES, ORIGIN[1]))
    fails([before, shifted, "-o", tmp_path / "o7"], 3, "pass --align")
    multi = write_raster(tmp_path / "m.tif", np.zeros((2, H, W), np.uint8))
    fails([before, multi, "-o", tmp_path / "o8"], 3, "--probability")
    flt = write_raster(tmp_path / "f.tif", np.zeros((H, W), np.float32))
    fails([before, flt, "-o", tmp_path / "o9"], 3, "--probability")
    r = runner.invoke(cli, ["change", str(before), str(shifted), "-o", str(tmp_path / "o10"), "--align",
                            "--preset", "prodes", "-q"])
    assert r.exit_code == 0, r.output
    assert r.output == ""


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_not_georeferenced(tmp_path):
    from geoseg.errors import NotGeoreferencedError

    b = classes(tmp_path / "b.tif", np.ones((10, 10)))
    a = classes(tmp_path / "a.tif", np.ones((10, 10)), crs=None)
    with pytest.raises(NotGeoreferencedError, match="AFTER raster .* has no CRS") as ei:
        detect_change(b, a, tmp_path / "out")
    assert "--allow-ungeoreferenced" not in str(ei.value)
    assert not (tmp_path / "out").exists()


# -- delivery sidecars (issue 6): styles, side-by-side quicklook, report -------------------------------


def test_styles_quicklook_and_report(pair, tmp_path):
    import sqlite3
    import xml.etree.ElementTree as ET

    from PIL import Image

    from geoseg.delivery.report import external_references

    before, after, _ = pair
    r = detect_change(before, after, tmp_path / "out", min_area=0)
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["change.json", "change.qml", "change.tif", "change_quicklook.png",
                                       "item.json", "loss.gpkg", "report.html"]
    # change.qml: paletted, one entry per change class, unobserved (255) transparent
    q = ET.fromstring((out / "change.qml").read_text().split("\n", 1)[1])
    entries = [(int(e.get("value")), e.get("color"), e.get("label"))
               for e in q.iter("paletteEntry")]
    assert entries == [(0, "#d9d9d9", "no_change"), (1, "#e31a1c", "forest_loss"), (2, "#33a02c", "forest_gain")]
    assert q.find(".//pixelListEntry").get("min") == "255"
    # loss.gpkg: a default single-symbol style in layer_styles; the layer still reads
    with sqlite3.connect(out / "loss.gpkg") as con:
        name, default, qml = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchone()
    assert (name, default) == ("loss", 1)
    assert ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2").get("type") == "singleSymbol"
    assert len(pyogrio.read_dataframe(out / "loss.gpkg", layer="loss")) == r.loss_polygon_count == 2
    # quicklook: three panels side by side with the change colours and forest green
    img = np.asarray(Image.open(out / "change_quicklook.png").convert("RGB")).astype(np.int16)
    assert img.shape == (760, 1800, 3)

    def where(rgb):
        return np.all(np.abs(img - np.array(rgb)) <= 3, axis=2)

    loss, gain, forest = where((227, 26, 28)), where((51, 160, 44)), where((0x39, 0x7D, 0x49))
    assert loss.sum() > 100 and gain.sum() > 100 and forest.sum() > 10000
    assert np.nonzero(loss)[1].min() > 1800 * 0.6  # loss drawn in the change panel (right third) ...
    assert np.nonzero(forest)[1].min() < 1800 * 0.33 < np.nonzero(forest)[1].max()  # forest in before+after
    # report.html: loss/gain areas from change.json, the quicklook embedded, nothing external
    doc = (out / "report.html").read_text()
    assert external_references(doc) == []
    assert 'id="change-areas"' in doc and "data:image/png;base64," in doc
    assert 'data-class="forest_loss"' in doc and "3.00 ha" in doc and "4.50 ha" in doc
    assert '<a href="loss.gpkg">' in doc


def test_sidecar_names_are_refused_without_overwrite(pair, tmp_path):
    before, after, _ = pair
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.html").write_text("old")
    with pytest.raises(OutputExistsError):
        detect_change(before, after, tmp_path / "out")
    detect_change(before, after, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "report.html").read_text() != "old"


def test_change_quicklook_reads_overviews(tmp_path, monkeypatch):
    """Every panel comes from an overview (bounded memory), never from the full-resolution band."""
    import rasterio.shutil

    import geoseg.delivery.quicklook as ql
    from geoseg.change.api import change_class_info

    n = 1100
    data = np.zeros((n, n), np.uint8)
    data[: n // 2] = 1
    paths = {}
    for name in ("before", "after", "change"):
        plain = classes(tmp_path / f"{name}_plain.tif", data)
        paths[name] = tmp_path / f"{name}.tif"
        rasterio.shutil.copy(plain, paths[name], driver="COG", OVERVIEW_RESAMPLING="MODE")
    levels = []
    real = ql.read_decimated

    def spy(path, mw, mh, band=1):
        out = real(path, mw, mh, band=band)
        levels.append((os.path.basename(str(path)), out[2], out[0].shape))
        assert max(out[0].shape) <= max(mw, mh)
        return out

    monkeypatch.setattr(ql, "read_decimated", spy)
    png = ql.write_change_quicklook(paths["change"], paths["before"], paths["after"], tmp_path / "q.png",
                                   before_forest=lambda d: d == 1, after_forest=lambda d: d == 1,
                                   change_classes=change_class_info(), width=900, height=400)
    assert os.path.getsize(png) > 0
    assert sorted(name for name, _, _ in levels) == ["after.tif", "before.tif", "change.tif"]
    assert all(level is not None for _, level, _ in levels), levels
