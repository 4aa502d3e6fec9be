"""GIS-ready delivery (issue 6): QGIS styles, RAT/category names, STAC Item, quicklook.

Each test runs on a real ``predict_scene`` output (a small pattern scene and the linear test model) so
the sidecars are checked against the files geoseg actually writes.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from stac_schemas import validate_item

from geoseg.delivery.quicklook import read_decimated, write_quicklook
from geoseg.delivery.rat import write_rat
from geoseg.delivery.stac import EXTENSIONS, PROCESSING_EXTENSION, multihash_sha256, stac_item, write_stac_item
from geoseg.delivery.style import (
    ALERT_CATEGORIES,
    LOSS_CATEGORY,
    PERCENT_RAMP,
    embed_gpkg_style,
    raster_qml,
    vector_qml,
    vector_sld,
    write_gfw_qml,
    write_percent_qml,
    write_qml,
)
from geoseg.errors import InputError
from geoseg.model.card import ClassInfo
from geoseg.predict.api import predict_scene
from geoseg.testing import ORIGIN, RES, pattern_scene, write_raster

CLASSES = (ClassInfo(0, "water", "#419BDF"), ClassInfo(1, "trees", "#397D49"), ClassInfo(2, "built area", "#C4281B"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, linear_model) -> Path:
    """A finished predict run: landcover.tif, probabilities.tif, run.json, landcover.gpkg."""
    d = tmp_path_factory.mktemp("delivery")
    scene, _ = pattern_scene(300, 420)
    src = write_raster(d / "scene.tif", scene, descriptions=("B2", "B3", "B4", "B8"))
    predict_scene(src, linear_model, d / "out", probabilities=True, vector="gpkg",
                  vector_options={"simplify": None}, progress=False)
    return d / "out"


def model_classes(out: Path) -> list[ClassInfo]:
    rec = json.loads((out / "run.json").read_text())
    return [ClassInfo(**c) for c in rec["classes"]]


# ---------------------------------------------------------------------------------------------
# QGIS styles
# ---------------------------------------------------------------------------------------------


def test_qml_sidecar_is_paletted_with_one_entry_per_class(out):
    classes = model_classes(out)
    qml = write_qml(out / "landcover.tif", classes)
    assert qml == str(out / "landcover.qml")
    root = ET.parse(qml).getroot()  # parses as XML (the DOCTYPE line included)
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [(int(e.get("value")), e.get("label"), e.get("color"), e.get("alpha")) for e in entries] == [
        (c.value, c.name, c.color.lower(), "255") for c in classes]
    # the palette matches the COG's own colour table
    with rasterio.open(out / "landcover.tif") as src:
        cmap = src.colormap(1)
    for e in entries:
        assert cmap[int(e.get("value"))][:3] == tuple(int(e.get("color")[i:i + 2], 16) for i in (1, 3, 5))
    # nodata is fully transparent
    px = renderer.find("rasterTransparency/singleValuePixelList/pixelListEntry")
    assert (px.get("min"), px.get("max"), px.get("percentTransparent")) == ("255", "255", "100")
    assert not list(out.glob(".*.tmp"))


def test_qml_escapes_names_and_sorts_by_value():
    classes = [ClassInfo(5, 'a "quoted" <name> & more', "#000000"), ClassInfo(1, "one", "#FFFFFF")]
    root = ET.fromstring(raster_qml(classes).split("\n", 1)[1])
    entries = root.findall("pipe/rasterrenderer/colorPalette/paletteEntry")
    assert [e.get("value") for e in entries] == ["1", "5"]
    assert entries[1].get("label") == 'a "quoted" <name> & more'


def test_percent_qml_for_probability_rasters(out):
    qml = write_percent_qml(out / "probabilities.tif", label="water probability")
    assert qml == str(out / "probabilities.qml")
    renderer = ET.parse(qml).getroot().find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
    shader = renderer.find("rastershader/colorrampshader")
    with rasterio.open(out / "probabilities.tif") as src:  # the stored values really are 0..100 percent
        assert src.scales[0] == 0.01 and int(src.read(1, masked=True).max()) <= 100
    # ... but QGIS styles raw * scale + offset (0..1 here), so the ramp is written in those units
    assert (shader.get("minimumValue"), shader.get("maximumValue")) == ("0", "1")
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "1")
    items = shader.findall("item")
    assert [float(i.get("value")) for i in items] == [v / 100 for v, _ in PERCENT_RAMP]
    assert [i.get("label") for i in items][-1] == "100 % water probability"
    px = renderer.find("rasterTransparency/singleValuePixelList/pixelListEntry")  # raw 255 (nodata) -> 2.55
    assert float(px.get("min")) < 2.55 < float(px.get("max")) < 2.56
    # a percent raster without a scale gets the ramp on 0..100
    unscaled = write_raster(out / "plain.tif", np.array([[0, 50], [100, 255]], np.uint8), nodata=255)
    shader = ET.parse(write_percent_qml(unscaled)).getroot().find("pipe/rasterrenderer/rastershader/colorrampshader")
    assert (shader.get("minimumValue"), shader.get("maximumValue")) == ("0", "100")
    assert [int(i.get("value")) for i in shader.findall("item")] == [v for v, _ in PERCENT_RAMP]


def test_write_qml_refuses_missing_raster(tmp_path):
    with pytest.raises(InputError):
        write_qml(tmp_path / "nope.tif", CLASSES)
    assert not list(tmp_path.iterdir())


def test_gpkg_style_is_default_and_gpkg_still_reads(out):
    classes = model_classes(out)
    gpkg = out / "landcover.gpkg"
    before = pyogrio.read_dataframe(gpkg, layer="landcover")
    assert embed_gpkg_style(gpkg, "landcover", classes) == "landcover"
    embed_gpkg_style(gpkg, "landcover", classes)  # idempotent: still one row
    after = pyogrio.read_dataframe(gpkg, layer="landcover")
    assert len(after) == len(before) > 0
    assert sorted(after["class"].unique()) == sorted(before["class"].unique())
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    assert {"landcover", "layer_styles"} <= layers  # registered in gpkg_contents, as QGIS does
    styles = pyogrio.read_dataframe(gpkg, layer="layer_styles", read_geometry=False)
    assert len(styles) == 1
    with sqlite3.connect(gpkg) as con:
        row = con.execute("SELECT f_table_name, f_geometry_column, styleName, useAsDefault, styleQML, styleSLD "
                          "FROM layer_styles").fetchone()
        geom_col = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name='landcover'"
                               ).fetchone()[0]
        cols = [r[1] for r in con.execute("PRAGMA table_info(layer_styles)")]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
    assert app_id == 0x47504B47 and version == 10200  # 'GPKG' 1.2: opens without a warning in older GDAL/QGIS
    assert cols == ["id", "f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column", "styleName",
                    "styleQML", "styleSLD", "useAsDefault", "description", "owner", "ui", "update_time"]
    assert row[0] == "landcover" and row[1] == geom_col and row[3] == 1
    qml = ET.fromstring(row[4].split("\n", 1)[1])
    r = qml.find("renderer-v2")
    assert r.get("type") == "categorizedSymbol" and r.get("attr") == "class"
    cats = r.findall("categories/category")
    assert [(int(c.get("value")), c.get("label")) for c in cats] == [(c.value, c.name) for c in classes]
    symbols = {s.get("name"): s for s in r.findall("symbols/symbol")}
    for cat, c in zip(cats, classes):
        colour = symbols[cat.get("symbol")].find("layer/Option/Option[@name='color']").get("value")
        assert colour == "{},{},{},255".format(*c.rgb)
    sld = ET.fromstring(row[5])
    assert len(sld.findall(".//{http://www.opengis.net/se}Rule")) == len(classes)


def test_gpkg_style_second_style_takes_default(out):
    gpkg = out / "landcover.gpkg"
    embed_gpkg_style(gpkg, "landcover", CLASSES)
    embed_gpkg_style(gpkg, "landcover", CLASSES, style_name="alt")
    with sqlite3.connect(gpkg) as con:
        rows = dict(con.execute("SELECT styleName, useAsDefault FROM layer_styles").fetchall())
    assert rows == {"landcover": 0, "alt": 1}


def test_gpkg_style_unknown_layer_leaves_file_untouched(out):
    gpkg = out / "landcover.gpkg"
    data = gpkg.read_bytes()
    with pytest.raises(InputError, match="no feature layer 'nope'"):
        embed_gpkg_style(gpkg, "nope", CLASSES)
    assert gpkg.read_bytes() == data
    assert not list(out.glob(".*.tmp"))


def test_gpkg_style_on_a_string_field_with_given_categories(tmp_path):
    """The generalised embed: categories on any field (here alerts' ``confidence``), in the given order."""
    import geopandas as gpd
    from shapely.geometry import box

    gpkg = tmp_path / "alerts.gpkg"
    gdf = gpd.GeoDataFrame({"confidence": ["low", "high", "rejected"], "n": [1, 2, 3]},
                           geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1), box(2, 0, 3, 1)], crs="EPSG:32633")
    pyogrio.write_dataframe(gdf, gpkg, layer="alerts", driver="GPKG")
    embed_gpkg_style(gpkg, "alerts", ALERT_CATEGORIES, field="confidence", style_name="by confidence")
    with sqlite3.connect(gpkg) as con:
        qml_text, sld_text, default = con.execute(
            "SELECT styleQML, styleSLD, useAsDefault FROM layer_styles WHERE f_table_name='alerts'").fetchone()
    assert default == 1
    r = ET.fromstring(qml_text.split("\n", 1)[1]).find("renderer-v2")
    assert r.get("type") == "categorizedSymbol" and r.get("attr") == "confidence"
    cats = r.findall("categories/category")
    assert [(c.get("value"), c.get("type")) for c in cats] == [("high", "string"), ("low", "string"),
                                                               ("rejected", "string")]
    symbols = {s.get("name"): s for s in r.findall("symbols/symbol")}
    colours = {c.get("value"): symbols[c.get("symbol")].find("layer/Option/Option[@name='color']").get("value")
               for c in cats}
    assert colours == {"high": "215,25,28,255", "low": "253,174,97,255", "rejected": "158,158,158,255"}
    literals = [e.text for e in ET.fromstring(sld_text).iter("{http://www.opengis.net/ogc}Literal")]
    assert literals == ["high", "low", "rejected"]
    assert len(pyogrio.read_dataframe(gpkg, layer="alerts")) == 3
    with pytest.raises(InputError, match="no field 'class_name'"):
        embed_gpkg_style(gpkg, "alerts", ALERT_CATEGORIES, field="class_name")


def test_single_symbol_style_and_gfw_qml(tmp_path):
    r = ET.fromstring(vector_qml([LOSS_CATEGORY], field=None).split("\n", 1)[1]).find("renderer-v2")
    assert r.get("type") == "singleSymbol" and r.find("categories") is None
    assert r.find("symbols/symbol/layer/Option/Option[@name='color']").get("value") == "227,26,28,255"
    with pytest.raises(InputError, match="exactly one category"):
        vector_qml(list(ALERT_CATEGORIES), field=None)
    sld = ET.fromstring(vector_sld([LOSS_CATEGORY], "loss", field=None))
    assert sld.find(".//{http://www.opengis.net/ogc}Filter") is None
    # GFW date-confidence raster: discrete ranges, 0 transparent
    raster = write_raster(tmp_path / "alerts_gfw.tif", np.array([[0, 22000], [31000, 0]], np.uint16))
    q = ET.fromstring(Path(write_gfw_qml(raster)).read_text().split("\n", 1)[1])
    shader = q.find("pipe/rasterrenderer/rastershader/colorrampshader")
    assert shader.get("colorRampType") == "DISCRETE"
    items = [(int(i.get("value")), i.get("alpha")) for i in shader.findall("item")]
    assert items == [(0, "0"), (29999, "255"), (39999, "255")]
    assert q.find("pipe/rasterrenderer/rasterTransparency/singleValuePixelList/pixelListEntry").get("min") == "0"


# ---------------------------------------------------------------------------------------------
# raster attribute table / category names
# ---------------------------------------------------------------------------------------------


def test_rat_sidecar_xml(out):
    classes = model_classes(out)
    aux = write_rat(out / "landcover.tif", classes)
    root = ET.parse(aux).getroot()
    band = root.find("PAMRasterBand[@band='1']")
    assert [c.text or "" for c in band.findall("CategoryNames/Category")] == [c.name for c in classes]
    rat = band.find("GDALRasterAttributeTable")
    assert [(f.findtext("Name"), f.findtext("Usage")) for f in rat.findall("FieldDefn")] == [
        ("Value", "5"), ("Class_Name", "2"), ("Red", "6"), ("Green", "7"), ("Blue", "8"), ("Alpha", "9")]
    rows = [[f.text for f in r.findall("F")] for r in rat.findall("Row")]
    assert rows == [[str(c.value), c.name, *map(str, c.rgb), "255"] for c in classes]
    # rasterio (GDAL) still opens the COG with the sidecar; palette and tags are unchanged
    with rasterio.open(out / "landcover.tif") as src:
        assert src.colormap(1)[classes[0].value][:3] == classes[0].rgb
        assert src.tags(1)[f"CLASS_{classes[0].value}"] == classes[0].name


def test_rat_keeps_existing_pam_content(tmp_path):
    tif = write_raster(tmp_path / "c.tif", np.zeros((1, 8, 8), np.uint8), nodata=255)
    (tmp_path / "c.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MEAN">1</MDI></Metadata>'
        "<CategoryNames><Category>old</Category></CategoryNames></PAMRasterBand></PAMDataset>")
    write_rat(tif, [ClassInfo(0, "water", "#0000FF"), ClassInfo(3, "built", "#FF0000")])
    band = ET.parse(tmp_path / "c.tif.aux.xml").getroot().find("PAMRasterBand")
    assert band.find("Metadata/MDI").text == "1"
    assert [c.text or "" for c in band.findall("CategoryNames/Category")] == ["water", "", "", "built"]
    assert len(band.findall("CategoryNames")) == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo not installed (apt-get install gdal-bin)")
def test_gdal_reads_rat_categories_palette_and_overviews(tmp_path, linear_model):
    scene, _ = pattern_scene(1100, 900)  # big enough for the COG driver to build overviews
    src = write_raster(tmp_path / "scene.tif", scene, descriptions=("B2", "B3", "B4", "B8"))
    r = predict_scene(src, linear_model, tmp_path / "out", progress=False)
    classes = model_classes(tmp_path / "out")
    write_rat(r.landcover, classes)
    info = json.loads(subprocess.run(["gdalinfo", "-json", r.landcover], check=True, capture_output=True,
                                     text=True).stdout)
    band = info["bands"][0]
    assert band["categories"] == [c.name for c in classes]
    rat = info["rat"]
    assert [f["name"] for f in rat["fieldDefn"]] == ["Value", "Class_Name", "Red", "Green", "Blue", "Alpha"]
    assert [f["usage"] for f in rat["fieldDefn"]] == [5, 2, 6, 7, 8, 9]
    assert [row["f"] for row in rat["row"]] == [[c.value, c.name, *c.rgb, 255] for c in classes]
    palette = band["colorTable"]["entries"]
    assert [palette[c.value][:3] for c in classes] == [list(c.rgb) for c in classes]
    assert band["noDataValue"] == 255
    assert band.get("overviews"), "the class COG should have overviews"
    assert info["metadata"][""]["AREA_OR_POINT"] == "Area"


# ---------------------------------------------------------------------------------------------
# STAC
# ---------------------------------------------------------------------------------------------


def test_stac_item_validates_and_checksums_match(out):
    classes = model_classes(out)
    write_qml(out / "landcover.tif", classes)
    write_rat(out / "landcover.tif", classes)
    write_percent_qml(out / "probabilities.tif")
    write_quicklook(out / "landcover.tif", width=600, height=400)
    path = write_stac_item(out)
    item = json.loads(Path(path).read_text())
    validate_item(item)
    assert set(item["stac_extensions"]) == {*EXTENSIONS.values(), PROCESSING_EXTENSION}
    rec = json.loads((out / "run.json").read_text())
    assert item["properties"]["processing:software"] == {"geoseg": rec["geoseg_version"]}
    assert rec["scene"] in item["properties"]["processing:lineage"]
    assert item["properties"]["datetime"] == rec["created"]
    assert item["properties"]["proj:code"] == "EPSG:32633"
    assert item["properties"]["proj:shape"] == [300, 420]
    assert item["properties"]["proj:transform"] == [RES, 0.0, ORIGIN[0], 0.0, -RES, ORIGIN[1]]
    assert item["properties"]["proj:bbox"] == [ORIGIN[0], ORIGIN[1] - 300 * RES, ORIGIN[0] + 420 * RES, ORIGIN[1]]
    # WGS84 footprint, checked with pyproj (independent of the rasterio path used by geoseg.stac)
    from pyproj import Transformer

    expected = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform_bounds(
        *item["properties"]["proj:bbox"], densify_pts=50)
    assert item["bbox"] == pytest.approx(list(expected), abs=1e-6)
    w, s, e, n = item["bbox"]
    assert 14.999 < w <= 15.0 < e < 15.1 and 45.9 < s < n < 46.1  # UTM 33N x=500 km is the 15 E meridian
    ring = np.array(item["geometry"]["coordinates"][0])
    assert (ring[0] == ring[-1]).all()
    x, y = ring[:, 0], ring[:, 1]
    assert 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0  # counter-clockwise exterior ring (RFC 7946)
    assert ring[:, 0].min() == pytest.approx(w) and ring[:, 1].max() == pytest.approx(n)
    assets = item["assets"]
    assert {"landcover", "probabilities", "landcover-vector", "quicklook", "landcover-style", "landcover-aux",
            "probabilities-style", "report", "run"} == set(assets)
    for a in assets.values():
        f = out / a["href"]
        assert a["file:size"] == f.stat().st_size
        assert a["file:checksum"] == "1220" + __import__("hashlib").sha256(f.read_bytes()).hexdigest()
    lc = assets["landcover"]
    assert lc["raster:bands"] == [{"data_type": "uint8", "sampling": "area", "nodata": 255,
                                   "spatial_resolution": RES}]
    got = {c["value"]: (c["title"], c.get("color_hint")) for c in lc["classification:classes"]}
    assert got == {**{c.value: (c.name, c.color.lstrip("#").upper()) for c in classes},
                   255: ("no valid input", None)}
    assert assets["probabilities"]["raster:bands"][0]["scale"] == 0.01
    assert len(assets["probabilities"]["raster:bands"]) == len(classes)
    assert "classification:classes" not in assets["probabilities"]


def test_stac_validation_catches_bad_items(out):
    item = stac_item(out)
    bad = json.loads(json.dumps(item))
    bad["assets"]["landcover"]["file:checksum"] = "not-hex!"
    bad["assets"]["landcover"]["classification:classes"][0]["name"] = "has space"
    bad["properties"]["proj:shape"] = [1, 2, 3]
    del bad["properties"]["datetime"]
    with pytest.raises(AssertionError) as e:
        validate_item(bad)
    msg = str(e.value)
    for name in ("item.json", "file-v2.1.0.json", "classification-v2.0.0.json", "projection-v2.0.0.json"):
        assert name in msg


def test_stac_checksum_is_multihash(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert multihash_sha256(p) == "1220ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_stac_needs_run_json(tmp_path):
    with pytest.raises(InputError, match="run.json"):
        write_stac_item(tmp_path)


# ---------------------------------------------------------------------------------------------
# quicklook
# ---------------------------------------------------------------------------------------------


def test_quicklook_png_size_and_palette_colours(out):
    classes = model_classes(out)
    rec = json.loads((out / "run.json").read_text())
    png = write_quicklook(out / "landcover.tif", classes=classes, width=900, height=600,
                          class_pixels=rec["class_pixels"])
    assert png == str(out / "quicklook.png")
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (900, 600)
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert (rgb != 255).any(axis=1).mean() > 0.2  # not blank
    colours = {tuple(int(v) for v in row) for row in np.unique(rgb, axis=0)}
    for c in classes:  # every class colour is drawn (nearest-neighbour, no interpolation)
        assert c.rgb in colours
        assert (rgb == c.rgb).all(axis=1).sum() > 500


def test_quicklook_reads_overviews_not_full_resolution(tmp_path, monkeypatch):
    """A 6000 x 5000 class COG: the read is decimated (small array), and the classes come from its tags."""
    h, w = 5000, 6000
    r, c = np.mgrid[0:h:50, 0:w:50]
    small = ((r // 500 + c // 700) % 3).astype(np.uint8)
    big = np.kron(small, np.ones((50, 50), np.uint8))
    tif = tmp_path / "big.tif"
    profile = {"driver": "COG", "width": w, "height": h, "count": 1, "dtype": "uint8", "nodata": 255,
               "crs": "EPSG:32633", "transform": Affine(10, 0, 500000, 0, -10, 5100000), "compress": "deflate",
               "overview_resampling": "mode"}
    with rasterio.open(tmp_path / "plain.tif", "w", **{**profile, "driver": "GTiff", "tiled": True}) as dst:
        dst.write(big, 1)
        dst.write_colormap(1, {0: (0, 0, 255, 255), 1: (0, 128, 0, 255), 2: (255, 0, 0, 255)})
        dst.update_tags(1, CLASS_0="water", CLASS_1="trees", CLASS_2="built")
    del big
    rasterio.shutil.copy(tmp_path / "plain.tif", tif, driver="COG", OVERVIEW_RESAMPLING="MODE")
    with rasterio.open(tif) as src:
        assert src.overviews(1)
    shapes = []
    real = read_decimated

    def spy(path, mw, mh):
        a, f, level = real(path, mw, mh)
        shapes.append((a.shape, level))
        return a, f, level

    monkeypatch.setattr("geoseg.delivery.quicklook.read_decimated", spy)
    png = write_quicklook(tif, tmp_path / "q.png", width=600, height=400)
    (shape, level), = shapes
    assert shape[0] * shape[1] <= 600 * 400
    with rasterio.open(tif) as src:
        factors = src.overviews(1)
    assert level is not None and w / factors[level] >= shape[1]  # an overview, big enough for the picture
    assert level == len(factors) - 1 or w / factors[level + 1] < shape[1]  # and the coarsest such one
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (600, 400)
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for colour in ((0, 0, 255), (0, 128, 0), (255, 0, 0)):
        assert (rgb == colour).all(axis=1).sum() > 100


def test_quicklook_missing_raster(tmp_path):
    with pytest.raises(InputError):
        write_quicklook(tmp_path / "none.tif")
