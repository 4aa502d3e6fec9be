#!/usr/bin/env python3
"""Open geoseg's styled outputs in real QGIS (headless) and check the styles are applied as meant.

Run by the *system* Python that has PyQGIS (Debian: ``apt-get install python3-qgis qgis-providers``), not
the project's virtual environment; it imports nothing from geoseg::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/delivery/qgis_check.py OUTDIR [OUTDIR ...]

Every product found under OUTDIR (recursively) is checked:

* rasters ``landcover.tif``, ``change.tif`` (paletted), ``probabilities.tif``, ``confidence.tif``,
  ``alerts_gfw.tif`` (single-band pseudocolour), and any other ``X.tif`` with an ``X.qml`` beside it:
  the layer is valid, QGIS applied ``X.qml`` by itself when the layer was opened (and ``loadDefaultStyle``
  succeeds), the renderer type and its classes (value, label, colour) match the raster's own class table
  (``CLASS_<v>`` tags + GDAL colour table) and ``run.json``'s model classes, nodata is transparent, the
  CRS matches GDAL's, and the layer *rendered* by QGIS's map renderer at native resolution has, pixel by
  pixel, the colours the style gives to the stored values;
* GeoPackage feature layers ``landcover`` (categorized on ``class``), ``loss`` (single symbol) and
  ``alerts`` (categorized on ``confidence``), and any layer with a default style in ``layer_styles``:
  the layer is valid, QGIS lists the style in the database and applied it when the layer was opened,
  the renderer type, field and categories are the expected ones and cover every value in the data, the
  SLD copy loads, the CRS matches ``gpkg_spatial_ref_sys``, the feature count matches the table's, and
  a render shows the category colours.

Prints one JSON summary on stdout; exits 0 when every check passed, 1 with ``FAIL: <reason>`` (one line
per failure) on stderr otherwise, 2 on bad usage.  Needs only PyQGIS, numpy and GDAL's Python bindings
(dependencies of python3-qgis).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from osgeo import gdal  # noqa: E402
from qgis.core import (  # noqa: E402
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor, QImage  # noqa: E402

gdal.UseExceptions()

PALETTED = {"landcover.tif", "change.tif"}
PSEUDOCOLOR = {"probabilities.tif", "confidence.tif", "alerts_gfw.tif"}
PERCENT = {"probabilities.tif", "confidence.tif"}
#: feature layer -> (renderer type, field or None, expected category values in order or None)
VECTOR_LAYERS = {
    "landcover": ("categorizedSymbol", "class", None),  # values from run.json
    "alerts": ("categorizedSymbol", "confidence", ["high", "low", "rejected"]),
    "loss": ("singleSymbol", None, None),
}
#: fraction of rendered pixels that must have exactly the style's colour (native-resolution raster render)
RASTER_MATCH = 0.999
#: of the pixels a vector render covers, the fraction that must be one of the style's colours
VECTOR_MATCH = 0.95
MAX_RENDER = 4096  # larger rasters are rendered at this size and compared by colour set only


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.layers: list[dict] = []

    def fail(self, where: str, msg: str) -> None:
        self.failures.append(f"{where}: {msg}")

    def expect(self, cond: bool, where: str, msg: str) -> bool:
        if not cond:
            self.fail(where, msg)
        return bool(cond)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def hexrgb(c: QColor) -> str:
    return c.name().lower()


def render(layer, crs, extent, width: int, height: int, antialias: bool = False) -> np.ndarray:
    """Render ``layer`` with QGIS's map renderer; (h, w, 4) uint8 RGBA (not premultiplied)."""
    ms = QgsMapSettings()
    ms.setLayers([layer])
    ms.setDestinationCrs(crs)
    ms.setExtent(extent)
    ms.setOutputSize(QSize(width, height))
    ms.setBackgroundColor(QColor(0, 0, 0, 0))
    ms.setFlag(QgsMapSettings.Antialiasing, antialias)
    job = QgsMapRendererSequentialJob(ms)
    job.start()
    job.waitForFinished()
    errs = [f"{e.layerID}: {e.message}" for e in job.errors()]
    if errs:
        raise RuntimeError("render errors: " + "; ".join(errs))
    img = job.renderedImage().convertToFormat(QImage.Format_RGBA8888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(bytes(ptr), np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 4].reshape(img.height(), img.width(), 4).copy()


def gdal_classes(ds) -> dict[int, tuple[str, str]]:
    """value -> (name, #rrggbb) from band 1's CLASS_<v> tags (names) and colour table (colours)."""
    band = ds.GetRasterBand(1)
    md = band.GetMetadata() or {}
    ct = band.GetColorTable()
    out = {}
    for k, name in md.items():
        if k.startswith("CLASS_") and k[6:].isdigit():
            v = int(k[6:])
            rgb = "#{:02x}{:02x}{:02x}".format(*ct.GetColorEntry(v)[:3]) if ct is not None else None
            out[v] = (name, rgb)
    return out


def qml_doc(path: Path) -> ET.Element | None:
    """Parse a QML (the DOCTYPE line is harmless for ElementTree); None when it is not XML."""
    try:
        return ET.fromstring(path.read_text(encoding="utf-8"))
    except (ET.ParseError, OSError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------------
# rasters
# ---------------------------------------------------------------------------------------------


def check_raster(ck: Checker, tif: Path) -> None:
    where = str(tif)
    qml = tif.with_suffix(".qml")
    rec: dict = {"path": str(tif), "kind": "raster", "qml": qml.name}
    ck.layers.append(rec)
    if not ck.expect(qml.is_file(), where, f"no style sidecar {qml.name}"):
        return
    want_type = "paletted" if tif.name in PALETTED else "singlebandpseudocolor" if tif.name in PSEUDOCOLOR else None
    if want_type is None:  # an unknown product: expect the renderer its QML declares
        doc = qml_doc(qml)
        r = doc.find("pipe/rasterrenderer") if doc is not None else None
        want_type = r.get("type") if r is not None else "?"

    ds = gdal.Open(str(tif))
    band = ds.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    # QGIS styles the scaled values (raw * scale + offset, GDAL band metadata), not the stored ones
    scale, offset = band.GetScale() or 1.0, band.GetOffset() or 0.0

    def shown(raw: float) -> float:
        return float(np.float32(raw * scale + offset)) if (scale, offset) != (1.0, 0.0) else float(raw)

    rec["scale_offset"] = [scale, offset]
    layer = QgsRasterLayer(str(tif), tif.stem, "gdal")
    rec["valid"] = layer.isValid()
    if not layer.isValid():
        ck.fail(where, "QGIS cannot open the raster")
        return
    # 1. the sidecar was applied when the layer was opened (QGIS loads <name>.qml by itself)
    auto_type = layer.renderer().type()
    rec["renderer_on_open"] = auto_type
    ck.expect(auto_type == want_type, where, f"renderer on open is {auto_type!r}, not {want_type!r}: "
                                             f"{qml.name} was not applied automatically")
    msg, ok = layer.loadDefaultStyle()
    rec["load_default_style"] = [bool(ok), msg]
    ck.expect(ok, where, f"loadDefaultStyle() failed: {msg}")
    msg, ok = layer.loadNamedStyle(str(qml))
    ck.expect(ok, where, f"loadNamedStyle({qml.name}) failed: {msg}")
    r = layer.renderer()
    rec["renderer"] = r.type()
    if not ck.expect(r.type() == want_type, where, f"renderer is {r.type()!r}, not {want_type!r}"):
        return

    # 2. CRS
    crs = QgsCoordinateReferenceSystem.fromWkt(ds.GetProjection())
    rec["crs"] = layer.crs().authid() or layer.crs().toWkt()[:60]
    ck.expect(layer.crs().isValid() and layer.crs() == crs, where,
              f"layer CRS {layer.crs().authid()} differs from GDAL's {crs.authid()}")

    # 3. the renderer's content
    transparent = set()
    tr = r.rasterTransparency()
    if tr is not None:
        for p in tr.transparentSingleValuePixelList():
            if p.percentTransparent >= 100:
                transparent.add((p.min, p.max))
    rec["transparent_values"] = sorted(transparent)
    if nodata is not None:
        ck.expect(any(lo <= shown(nodata) <= hi for lo, hi in transparent), where,
                  f"nodata {nodata:g} (shown as {shown(nodata):g}) is not fully transparent in the style")

    if r.type() == "paletted":
        shade = _check_palette(ck, where, tif, ds, r, rec)
    else:
        shade = _check_ramp(ck, where, tif, r, rec, shown, scale, offset)
    _check_render(ck, where, layer, ds, band, r, shade, shown, transparent, rec)


def _check_palette(ck: Checker, where: str, tif: Path, ds, r, rec: dict):
    """3. a paletted renderer: its classes are the raster's class table (and run.json's); returns the
    colour the style gives to a stored value."""
    got = {int(c.value): (c.label, hexrgb(c.color), c.color.alpha()) for c in r.classes()}
    rec["classes"] = {str(v): list(x) for v, x in sorted(got.items())}
    ck.expect(r.band() == 1, where, f"paletted renderer on band {r.band()}, not 1")
    exp = gdal_classes(ds)
    ck.expect(bool(exp), where, "the raster has no CLASS_<value> tags to compare the style with")
    run_json = tif.parent / "run.json"
    if tif.name == "landcover.tif" and run_json.is_file():
        card = {int(c["value"]): (c["name"], c["color"].lower())
                for c in json.loads(run_json.read_text())["classes"]}
        ck.expect(card == exp, where, f"raster class table {exp} differs from run.json classes {card}")
        exp = card
    want = {v: (n, c, 255) for v, (n, c) in exp.items()}
    ck.expect(got == want, where, f"palette classes {got} differ from the class table {want}")
    lut = {v: (*QColor(c).getRgb()[:3], 255) for v, (_, c, _) in got.items()}

    def shade(v):
        return lut.get(int(v), (0, 0, 0, 0))  # values outside the palette are not drawn

    return shade


def _check_ramp(ck: Checker, where: str, tif: Path, r, rec: dict, shown, scale: float, offset: float):
    """3. a pseudocolour renderer: percent ramps span 0..100 %, the GFW ramp is discrete; returns the
    colour the style gives to a stored value."""
    shader = r.shader().rasterShaderFunction()
    items = [(i.value, hexrgb(i.color), i.color.alpha(), i.label) for i in shader.colorRampItemList()]
    rec["ramp"] = {"type": ["interpolated", "discrete", "exact"][int(shader.colorRampType())],
                   "min": r.classificationMin(), "max": r.classificationMax(), "items": items}
    ck.expect(len(items) >= 2, where, f"colour ramp has {len(items)} items")
    if tif.name in PERCENT:
        ck.expect(r.band() == 1, where, f"pseudocolour on band {r.band()}, not 1")
        lo, hi = shown(0), shown(100)  # 0 and 100 % as QGIS shows them (0..1 with geoseg's scale 0.01)
        ck.expect(abs(r.classificationMin() - lo) < 1e-6 and abs(r.classificationMax() - hi) < 1e-6, where,
                  f"ramp covers {r.classificationMin():g}..{r.classificationMax():g}, but 0..100 % of this "
                  f"raster (scale {scale:g}, offset {offset:g}) is shown as {lo:g}..{hi:g}")
        ck.expect(int(shader.colorRampType()) == 0, where, "percent ramp is not interpolated")
        ck.expect(abs(items[0][0] - lo) < 1e-6 and abs(items[-1][0] - hi) < 1e-6, where,
                  f"ramp stops {[i[0] for i in items]} do not span {lo:g}..{hi:g} (0..100 %)")
        ck.expect(all("%" in i[3] for i in items), where, f"ramp labels {[i[3] for i in items]} lack '%'")
    if tif.name == "alerts_gfw.tif":
        ck.expect(int(shader.colorRampType()) == 1, where, "GFW ramp is not discrete")
        ck.expect([i[0] for i in items] == [0, 29999, 39999] and items[0][2] == 0, where,
                  f"GFW ramp items {items} are not 0 (transparent) / 29999 / 39999")

    def shade(v):
        ok, *rgba = r.shader().shade(shown(v))
        return tuple(rgba) if ok else (0, 0, 0, 0)

    return shade


def _check_render(ck: Checker, where: str, layer, ds, band, r, shade, shown, transparent: set, rec: dict) -> None:
    """4. render with QGIS's map renderer and compare with the colours the style gives to the stored
    values."""
    w, h = ds.RasterXSize, ds.RasterYSize
    zoom = min(1.0, MAX_RENDER / max(w, h))
    rw, rh = max(1, round(w * zoom)), max(1, round(h * zoom))
    try:
        img = render(layer, layer.crs(), layer.extent(), rw, rh)
    except RuntimeError as e:
        ck.fail(where, str(e))
        return
    data = band.ReadAsArray()
    values = np.unique(data)
    exp_lut = {}
    for v in values.tolist():
        if any(lo <= shown(v) <= hi for lo, hi in transparent):
            exp_lut[v] = (0, 0, 0, 0)
        else:
            exp_lut[v] = shade(v)
    rec["render"] = {"size": [rw, rh]}
    opaque = img[..., 3] > 0
    if zoom == 1.0:
        table = np.zeros((int(values.max()) + 1, 4), np.int16)
        for v, c in exp_lut.items():
            table[int(v)] = c
        exp = table[data.astype(np.int64)]
        exp_alpha = exp[..., 3] > 0
        got = img.astype(np.int16)
        same = (exp_alpha == opaque) & (~exp_alpha | np.all(np.abs(got[..., :3] - exp[..., :3]) <= 2, axis=2))
        frac = float(same.mean())
        rec["render"]["pixels_matching_style"] = round(frac, 6)
        ck.expect(frac >= RASTER_MATCH, where,
                  f"only {frac:.2%} of rendered pixels have the style's colour for their value "
                  f"(e.g. value {int(data[~same][0])} drew {tuple(img[~same][0])}, style says "
                  f"{tuple(exp[~same][0])})" if frac < 1 else "")
    # every colour the style gives to a value present in the raster is drawn
    drawn = {tuple(c) for c in np.unique(img[opaque][:, :3], axis=0).tolist()} if opaque.any() else set()
    missing, found = [], []
    for v, c in exp_lut.items():
        if c[3]:
            seen = any(max(abs(a - b) for a, b in zip(c[:3], d)) <= 2 for d in drawn)
            (found if seen else missing).append((v, "#{:02x}{:02x}{:02x}".format(*c[:3])))
    rec["render"]["colours_drawn"] = len(drawn)
    if r.type() == "paletted":
        rec["render"]["class_colours_drawn"] = sorted(c for _, c in found)
    ck.expect(not missing, where, f"values {missing} were not drawn in their style colour")
    ck.expect(opaque.any() or all(c[3] == 0 for c in exp_lut.values()), where, "the render is empty")


# ---------------------------------------------------------------------------------------------
# GeoPackages
# ---------------------------------------------------------------------------------------------


def check_gpkg(ck: Checker, gpkg: Path) -> None:
    con = sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)
    try:
        layers = con.execute(
            "SELECT g.table_name, g.column_name, s.organization, s.organization_coordsys_id, s.definition "
            "FROM gpkg_geometry_columns g JOIN gpkg_spatial_ref_sys s ON s.srs_id = g.srs_id").fetchall()
        has_styles = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'layer_styles'").fetchone() is not None
        styles = {}
        if has_styles:
            for t, name, q, sld in con.execute("SELECT f_table_name, styleName, styleQML, styleSLD FROM layer_styles "
                                              "WHERE useAsDefault"):
                styles.setdefault(t, []).append((name, q, sld))
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t, *_ in layers}
        run_json = gpkg.parent / "run.json"
        card = None
        if gpkg.name == "landcover.gpkg" and run_json.is_file():
            card = [(str(c["value"]), c["name"], c["color"].lower())
                    for c in sorted(json.loads(run_json.read_text())["classes"], key=lambda c: c["value"])]
        for table, _geom_col, org, org_id, definition in layers:
            want = VECTOR_LAYERS.get(table)
            if want is None and table not in styles:
                continue  # an unstyled layer geoseg does not promise a style for
            distinct = None
            if want and want[1]:
                distinct = {str(r[0]) for r in con.execute(f'SELECT DISTINCT "{want[1]}" FROM "{table}"')}
            check_vector_layer(ck, gpkg, table, want, styles.get(table, []), counts[table], (org, org_id, definition),
                               card, distinct)
    finally:
        con.close()


def check_vector_layer(ck, gpkg, table, want, styles, count, srs, card, distinct) -> None:
    where = f"{gpkg}|{table}"
    rec: dict = {"path": str(gpkg), "layer": table, "kind": "vector"}
    ck.layers.append(rec)
    if not ck.expect(len(styles) == 1, where, f"{len(styles)} default styles in layer_styles, expected 1"):
        return
    style_name, style_qml, style_sld = styles[0]
    rec["style"] = style_name
    layer = QgsVectorLayer(f"{gpkg}|layername={table}", table, "ogr")
    rec["valid"] = layer.isValid()
    if not ck.expect(layer.isValid(), where, "QGIS cannot open the layer"):
        return
    n, ids, names, descs, err = layer.listStylesInDatabase()
    rec["styles_in_database"] = names[:n]
    ck.expect(style_name in names[:n], where, f"QGIS does not list style {style_name!r} for the layer "
                                              f"(lists {names[:n]}; {err})")
    # the default style was applied when the layer was opened
    doc = ET.fromstring(style_qml)
    declared = doc.find("renderer-v2").get("type")
    want_type = want[0] if want else declared
    rec["renderer_on_open"] = layer.renderer().type()
    ck.expect(layer.renderer().type() == want_type, where,
              f"renderer on open is {layer.renderer().type()!r}, not {want_type!r}: the default style in "
              "layer_styles was not applied")
    msg, ok = layer.loadDefaultStyle()
    rec["load_default_style"] = [bool(ok), msg]
    ck.expect(ok, where, f"loadDefaultStyle() failed: {msg}")
    r = layer.renderer()
    rec["renderer"] = r.type()
    if not ck.expect(r.type() == want_type, where, f"renderer is {r.type()!r}, not {want_type!r}"):
        return

    # CRS and feature count
    org, org_id, definition = srs
    exp_crs = (QgsCoordinateReferenceSystem(f"{org.upper()}:{org_id}") if org and org.upper() == "EPSG"
               else QgsCoordinateReferenceSystem.fromWkt(definition))
    rec["crs"] = layer.crs().authid()
    ck.expect(layer.crs().isValid() and layer.crs() == exp_crs, where,
              f"layer CRS {layer.crs().authid()} differs from gpkg_spatial_ref_sys {exp_crs.authid()}")
    rec["feature_count"] = layer.featureCount()
    ck.expect(layer.featureCount() == count, where, f"QGIS counts {layer.featureCount()} features, the table {count}")

    colours = _check_categories(ck, where, layer, r, doc, want, card, distinct, rec)
    _check_sld(ck, where, gpkg, table, style_sld, colours, rec)
    _check_vector_render(ck, where, layer, r, colours, count, distinct, rec)


def _check_categories(ck, where, layer, r, doc, want, card, distinct, rec) -> dict:
    """The renderer's content: field, categories (value, label, colour), every value in the data has a
    category; returns the colour of each category (``None``: the single symbol)."""
    colours: dict = {}
    if r.type() == "categorizedSymbol":
        cats = [(str(c.value()), c.label(), hexrgb(c.symbol().color())) for c in r.categories()]
        rec["field"], rec["categories"] = r.classAttribute(), cats
        ck.expect(r.classAttribute() == want[1], where, f"categorized on {r.classAttribute()!r}, not {want[1]!r}")
        ck.expect(layer.fields().indexOf(r.classAttribute()) >= 0, where,
                  f"field {r.classAttribute()!r} is not in the layer")
        if card is not None:
            ck.expect(cats == card, where, f"categories {cats} differ from run.json classes {card}")
        elif want and want[2] is not None:
            ck.expect([c[0] for c in cats] == want[2], where, f"category values {[c[0] for c in cats]} != {want[2]}")
        exp_cats = [(c.get("value"), c.get("label")) for c in doc.iter("category")]
        ck.expect([c[:2] for c in cats] == exp_cats, where, f"categories {cats} differ from the stored QML {exp_cats}")
        ck.expect(all(c.renderState() for c in r.categories()), where, "a category is switched off")
        uncovered = sorted(distinct - {c[0] for c in cats}) if distinct is not None else []
        ck.expect(not uncovered, where, f"values {uncovered} of {r.classAttribute()!r} have no category")
        colours = {c[0]: c[2] for c in cats}
    elif r.type() == "singleSymbol":
        rec["symbol_colour"] = hexrgb(r.symbol().color())
        colours = {None: hexrgb(r.symbol().color())}
    stored = [o.get("value") for o in doc.iter("Option") if o.get("name") == "color"]
    parsed = [",".join(map(str, QColor(c).getRgb())) for c in colours.values()]
    ck.expect(stored == parsed, where, f"symbol colours parsed {parsed} differ from the stored QML {stored}")
    return colours


def _check_sld(ck, where, gpkg, table, style_sld, colours, rec) -> None:
    """The SLD copy loads in QGIS too (one rule per category)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sld", delete=False, encoding="utf-8") as f:
        f.write(style_sld)
    try:
        sld_layer = QgsVectorLayer(f"{gpkg}|layername={table}", table, "ogr")
        msg, ok = sld_layer.loadSldStyle(f.name)
        kind = sld_layer.renderer().type()
        # QGIS reads one rule without a filter as a single symbol, several rules as a rule-based renderer
        rules = (len(sld_layer.renderer().rootRule().children()) if kind == "RuleRenderer"
                 else 1 if kind == "singleSymbol" else None)
        rec["sld"] = {"loaded": bool(ok), "renderer": kind, "rules": rules}
        ck.expect(ok, where, f"QGIS cannot load the styleSLD: {msg}")
        ck.expect(rules == len(colours), where, f"the SLD gives {rules} rules ({kind}), the style "
                                                f"{len(colours)} categories")
    finally:
        os.unlink(f.name)


def _check_vector_render(ck, where, layer, r, colours, count, distinct, rec) -> None:
    """Render: the category colours are drawn, and almost nothing else."""
    if count == 0:
        return
    ext = layer.extent()
    ext.grow(max(ext.width(), ext.height()) * 0.02)
    w = 800
    h = max(50, min(2000, round(w * ext.height() / max(ext.width(), 1e-12))))
    try:
        img = render(layer, layer.crs(), ext, w, h)
    except RuntimeError as e:
        ck.fail(where, str(e))
        return
    opaque = img[..., 3] == 255
    rgb = img[..., :3][opaque]
    rec["render"] = {"size": [w, h], "covered_pixels": int(opaque.sum())}
    if not ck.expect(opaque.any(), where, "the render is empty"):
        return
    hits, drawn = np.zeros(len(rgb), bool), {}
    for key, col in colours.items():
        m = np.all(rgb == np.array(QColor(col).getRgb()[:3]), axis=1)
        hits |= m
        drawn[str(key) if key is not None else "symbol"] = int(m.sum())
    frac = float(hits.mean())
    rec["render"]["pixels_per_category"], rec["render"]["fraction_in_style_colours"] = drawn, round(frac, 4)
    ck.expect(frac >= VECTOR_MATCH, where, f"only {frac:.1%} of drawn pixels have a category colour")
    present = distinct if distinct is not None else {"symbol"}
    # a category present in the data but drawn nowhere (allow slivers: under 0.05 % of the map's area)
    big = set()
    if distinct is not None:
        area: dict[str, float] = {}
        idx = layer.fields().indexOf(r.classAttribute())
        for feat in layer.getFeatures():
            k = str(feat.attributes()[idx])
            area[k] = area.get(k, 0.0) + feat.geometry().area()
        total = ext.width() * ext.height()
        big = {k for k, a in area.items() if a / total > 5e-4}
    else:
        big = {"symbol"}
    not_drawn = sorted(k for k in present & big if drawn.get(k, 0) == 0)
    ck.expect(not not_drawn, where, f"categories {not_drawn} are in the data but not drawn in their colour")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    roots = [Path(a) for a in argv[1:]]
    for r in roots:
        if not r.is_dir():
            print(f"FAIL: {r} is not a folder", file=sys.stderr)
            return 2
    app = QgsApplication([], False)
    app.initQgis()
    ck = Checker()
    try:
        for root in roots:
            for tif in sorted(root.rglob("*.tif")):
                if tif.name in PALETTED | PSEUDOCOLOR or tif.with_suffix(".qml").is_file():
                    try:
                        check_raster(ck, tif)
                    except Exception as e:  # report and go on with the other layers
                        ck.fail(str(tif), f"{type(e).__name__}: {e}")
            for gpkg in sorted(root.rglob("*.gpkg")):
                try:
                    check_gpkg(ck, gpkg)
                except Exception as e:
                    ck.fail(str(gpkg), f"{type(e).__name__}: {e}")
        if not ck.layers:
            ck.fail(", ".join(map(str, roots)), "no styled geoseg product found")
        summary = {"qgis": Qgis.QGIS_VERSION, "ok": not ck.failures, "failures": ck.failures, "layers": ck.layers}
        print(json.dumps(summary, indent=1, default=str))
        for f in ck.failures:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1 if ck.failures else 0
    finally:
        app.exitQgis()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
