"""QGIS styles for geoseg's class products, so layers open styled with no manual step.

* :func:`write_qml` writes ``<raster>.qml`` beside a class raster: QGIS's *paletted* raster renderer with
  one ``paletteEntry`` (value, colour, label) per class; nodata (255) is transparent.  QGIS loads a ``.qml``
  with the same base name as a layer automatically.
* :func:`embed_gpkg_style` stores the matching *categorized* polygon style (on the ``class`` field that
  :mod:`geoseg.vectorize` writes) in the GeoPackage's ``layer_styles`` table as the layer's default style,
  the table and columns QGIS itself uses ("Save as default" into the datasource), plus an SLD rendering of
  the same rules for other clients.

Every write is atomic: a temporary file beside the target, then ``os.replace``.
No torch, no dask.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from geoseg._util.atomic import atomic_write_text, publish, remove_quietly, temp_path
from geoseg.errors import InputError, OutputError
from geoseg.io.codes import ClassInfo

__all__ = ["Category", "ALERT_CATEGORIES", "LOSS_CATEGORY", "write_gfw_qml", "gfw_qml", "write_qml", "raster_qml",
           "write_percent_qml", "percent_qml", "vector_qml", "vector_sld", "embed_gpkg_style", "qml_path", "NODATA"]

NODATA = 255
QGIS_VERSION = "3.28.0-Firenze"  # the QML format written here is read by QGIS 3.x (paletted since 3.0)
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"


# QGIS writes this block into every raster renderer; the values are its defaults.
MIN_MAX_ORIGIN = """      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>"""

# QGIS's default hue/saturation block of a raster pipe, and the renderer flags of its vector renderers.
_HUE_SATURATION = ('    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" '
                   'colorizeGreen="128" colorizeBlue="128" colorizeStrength="100" invertColors="0"/>')
_RENDERER_FLAGS = 'symbollevels="0" enableorderby="0" forceraster="0" referencescale="-1"'
_SLD_ROOT = ('<StyledLayerDescriptor xmlns="http://www.opengis.net/sld" version="1.1.0" '
             'xmlns:ogc="http://www.opengis.net/ogc" xmlns:se="http://www.opengis.net/se" '
             'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
             'xsi:schemaLocation="http://www.opengis.net/sld '
             'http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd">')


def _check_classes(classes: Sequence[ClassInfo]) -> list[ClassInfo]:
    out = list(classes)
    if not out:
        raise InputError("no classes given for the style; pass the model card's classes")
    return sorted(out, key=lambda c: c.value)


def qml_path(raster_path: str | os.PathLike) -> str:
    """``out/landcover.tif`` -> ``out/landcover.qml`` (the sidecar name QGIS looks for)."""
    return str(Path(raster_path).with_suffix(".qml"))


def raster_qml(classes: Sequence[ClassInfo], nodata: int | None = NODATA) -> str:
    """QML text of a paletted renderer for band 1 with one entry per class; ``nodata`` fully transparent."""
    cls = _check_classes(classes)
    entries = "\n".join(
        f'          <paletteEntry value="{c.value}" color={quoteattr(c.color.lower())} '
        f'label={quoteattr(c.name)} alpha="255"/>'
        for c in cls
    )
    transparency = _transparent(nodata, nodata) if nodata is not None else "        <rasterTransparency/>"
    return f"""{DOCTYPE}
<qgis version="{QGIS_VERSION}" styleCategories="AllStyleCategories" hasScaleBasedVisibilityFlag="0">
  <pipe>
{_NEAREST_PROVIDER}
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
{transparency}
{MIN_MAX_ORIGIN}
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
{_HUE_SATURATION}
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def write_qml(raster_path: str | os.PathLike, classes: Sequence[ClassInfo], nodata: int | None = NODATA) -> str:
    """Write ``<raster>.qml`` (paletted renderer, class names and colours) beside ``raster_path``."""
    if not Path(raster_path).exists():
        raise InputError(f"{raster_path} does not exist; write the raster before its style")
    return atomic_write_text(qml_path(raster_path), raster_qml(classes, nodata))


#: colour stops (percent, #RRGGBB) of the percent-raster ramp (matplotlib's viridis at 0, 25, 50, 75, 100)
PERCENT_RAMP = ((0, "#440154"), (25, "#3B528B"), (50, "#21918C"), (75, "#5EC962"), (100, "#FDE725"))


#: QGIS provider block: no resampling, nearest neighbour (classes and date codes must not be blended).
_NEAREST_PROVIDER = ('    <provider>\n      <resampling enabled="false" maxOversampling="2" '
                     'zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour"/>\n'
                     '    </provider>')


def _num(x: float) -> str:
    """A QML number: shortest round-trip form, no trailing ``.0`` (``0``, ``0.25``, ``100``)."""
    return f"{round(x, 12):.12g}"


def percent_qml(band: int = 1, label: str = "probability", nodata: int | None = NODATA,
                scale: float = 1.0, offset: float = 0.0) -> str:
    """QML of a single-band pseudocolour renderer over 0..100 % (probabilities.tif, confidence.tif).

    ``scale``/``offset``: the band's GDAL scale and offset.  QGIS applies them before styling (its GDAL
    provider reads ``raw * scale + offset``, as Float32), so the ramp stops and the transparent nodata
    value are written in those units: a percent raster stored with scale 0.01 (geoseg's) is shown as
    0..1 and its ramp runs over 0..1; labels stay in percent.
    """
    def shown(raw: float) -> float:
        return raw * scale + offset

    items = "\n".join(
        f'            <item value="{_num(shown(v))}" color="{c.lower()}" label={quoteattr(f"{v} % {label}")} '
        'alpha="255"/>'
        for v, c in PERCENT_RAMP
    )
    if nodata is None:
        transparency = "        <rasterTransparency/>"
    elif scale != 1 or offset:  # a range of half a raw step each side, so float rounding cannot miss it
        transparency = _transparent(*sorted((shown(nodata - 0.5), shown(nodata + 0.5))))
    else:
        transparency = _transparent(nodata, nodata)
    vmin, vmax = _num(shown(PERCENT_RAMP[0][0])), _num(shown(PERCENT_RAMP[-1][0]))
    return _pseudocolor_qml(band, vmin, vmax, items, transparency, ramp="INTERPOLATED", mode=1)


def _transparent(lo: float, hi: float) -> str:
    """The ``rasterTransparency`` block that makes values ``lo..hi`` fully transparent."""
    return ("        <rasterTransparency>\n          <singleValuePixelList>\n"
            f'            <pixelListEntry min="{_num(lo)}" max="{_num(hi)}" percentTransparent="100"/>\n'
            "          </singleValuePixelList>\n        </rasterTransparency>")


def _pseudocolor_qml(band: int, vmin: str, vmax: str, items: str, transparency: str, *, ramp: str, mode: int,
                     provider: str = "") -> str:
    """QML of a QGIS single-band pseudocolour renderer (``ramp``: INTERPOLATED or DISCRETE colour ramp
    shader; ``mode``: QGIS classification mode) with the given shader items and transparency blocks."""
    return f"""{DOCTYPE}
<qgis version="{QGIS_VERSION}" styleCategories="AllStyleCategories" hasScaleBasedVisibilityFlag="0">
  <pipe>
{provider}    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1" \
classificationMin="{vmin}" classificationMax="{vmax}" nodataColor="">
{transparency}
{MIN_MAX_ORIGIN}
      <rastershader>
        <colorrampshader colorRampType="{ramp}" classificationMode="{mode}" clip="0" minimumValue="{vmin}" \
maximumValue="{vmax}">
{items}
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
{_HUE_SATURATION}
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def write_percent_qml(raster_path: str | os.PathLike, band: int = 1, label: str = "probability") -> str:
    """Write ``<raster>.qml`` for a percent raster (values 0..100 in the file; geoseg's scale is 0.01).

    QGIS styles the *scaled* values (``raw * scale + offset``), so the ramp is written in the units of the
    raster's own scale and offset, read from the file: 0..1 for geoseg's percent rasters (scale 0.01).
    """
    if not Path(raster_path).exists():
        raise InputError(f"{raster_path} does not exist; write the raster before its style")
    import rasterio

    try:
        with rasterio.open(raster_path) as src:
            scale, offset = src.scales[band - 1], src.offsets[band - 1]
            nodata = src.nodatavals[band - 1]
    except (rasterio.errors.RasterioIOError, IndexError) as e:
        raise InputError(f"cannot read band {band} of {raster_path} ({e})") from None
    nd = int(nodata) if nodata is not None and float(nodata).is_integer() else None
    return atomic_write_text(qml_path(raster_path), percent_qml(band, label, nodata=nd, scale=scale, offset=offset))


# ---------------------------------------------------------------------------------------------
# vector (GeoPackage) style
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    """One category of a vector style: features whose ``field`` equals ``value`` get ``color`` (#RRGGBB).

    ``value`` may be an integer (``class`` codes) or a string (e.g. an alert's ``confidence``).
    """

    value: int | str
    label: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.color.lstrip("#")
        if len(c) != 6:
            raise InputError(f"colour {self.color!r} of category {self.label!r} is not #RRGGBB")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _categories(items: Sequence[ClassInfo | Category]) -> list[Category]:
    """Classes (sorted by value) or categories (kept in the given order) as :class:`Category`."""
    items = list(items)
    if not items:
        raise InputError("no classes given for the style; pass the model card's classes")
    infos = [c for c in items if isinstance(c, ClassInfo)]
    if len(infos) == len(items):
        return [Category(c.value, c.name, c.color) for c in sorted(infos, key=lambda c: c.value)]
    return [c if isinstance(c, Category) else Category(c.value, c.name, c.color) for c in items]


def _rgba(c: Category, alpha: int = 255) -> str:
    r, g, b = c.rgb
    return f"{r},{g},{b},{alpha}"


def _fill_symbol(i: int, c: Category) -> str:
    props = {"color": _rgba(c), "style": "solid", "outline_color": _rgba(c), "outline_style": "solid",
             "outline_width": "0.1", "outline_width_unit": "MM", "joinstyle": "bevel"}
    opts = "\n".join(f'              <Option name="{k}" type="QString" value="{v}"/>' for k, v in props.items())
    legacy = "\n".join(f'            <prop k="{k}" v="{v}"/>' for k, v in props.items())
    return f"""      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
            <Option type="Map">
{opts}
            </Option>
{legacy}
        </layer>
      </symbol>"""


def vector_qml(classes: Sequence[ClassInfo | Category], field: str | None = "class",
               preview: str | None = None) -> str:
    """QML of a categorized fill renderer on ``field``: one category and one solid symbol per class.

    ``classes``: :class:`ClassInfo` (integer codes, sorted by value) or :class:`Category` (integer or
    string values, in the given order).  ``field=None`` with one category: a single-symbol renderer
    (every feature drawn alike, e.g. loss polygons).
    """
    cats = _categories(classes)
    if field is None:
        if len(cats) != 1:
            raise InputError("a style without a field has exactly one category (single symbol)")
        renderer = f"""  <renderer-v2 type="singleSymbol" {_RENDERER_FLAGS}>
    <symbols>
{_fill_symbol(0, cats[0])}
    </symbols>
    <rotation/>
    <sizescale/>
  </renderer-v2>"""
    else:
        entries = "\n".join(
            f'      <category value={quoteattr(str(c.value))} label={quoteattr(c.label)} symbol="{i}" render="true" '
            f'type="{"string" if isinstance(c.value, str) else "long"}"/>'
            for i, c in enumerate(cats)
        )
        renderer = f"""  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} {_RENDERER_FLAGS}>
    <categories>
{entries}
    </categories>
    <symbols>
{chr(10).join(_fill_symbol(i, c) for i, c in enumerate(cats))}
    </symbols>
    <rotation/>
    <sizescale/>
  </renderer-v2>"""
    preview = preview or ('"class_name"' if field == "class" else f'"{field}"' if field else '"id"')
    return f"""{DOCTYPE}
<qgis version="{QGIS_VERSION}" styleCategories="Symbology|Labeling|Fields" hasScaleBasedVisibilityFlag="0">
{renderer}
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerOpacity>1</layerOpacity>
  <previewExpression>{escape(preview)}</previewExpression>
  <layerGeometryType>2</layerGeometryType>
</qgis>
"""


def vector_sld(classes: Sequence[ClassInfo | Category], layer: str, field: str | None = "class") -> str:
    """OGC SLD 1.1 of the same style (one rule per category; one rule without a filter when ``field`` is None)."""
    cats = _categories(classes)

    def flt(c: Category) -> str:
        if field is None:
            return ""
        return f"""
          <ogc:Filter xmlns:ogc="http://www.opengis.net/ogc">
            <ogc:PropertyIsEqualTo>
              <ogc:PropertyName>{escape(field)}</ogc:PropertyName>
              <ogc:Literal>{escape(str(c.value))}</ogc:Literal>
            </ogc:PropertyIsEqualTo>
          </ogc:Filter>"""

    rules = "\n".join(f"""        <se:Rule>
          <se:Name>{escape(c.label)}</se:Name>
          <se:Description><se:Title>{escape(c.label)}</se:Title></se:Description>{flt(c)}
          <se:PolygonSymbolizer>
            <se:Fill><se:SvgParameter name="fill">{c.color.lower()}</se:SvgParameter></se:Fill>
            <se:Stroke>
              <se:SvgParameter name="stroke">{c.color.lower()}</se:SvgParameter>
              <se:SvgParameter name="stroke-width">0.5</se:SvgParameter>
            </se:Stroke>
          </se:PolygonSymbolizer>
        </se:Rule>""" for c in cats)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
{_SLD_ROOT}
  <NamedLayer>
    <se:Name>{escape(layer)}</se:Name>
    <UserStyle>
      <se:Name>{escape(layer)}</se:Name>
      <se:FeatureTypeStyle>
{rules}
      </se:FeatureTypeStyle>
    </UserStyle>
  </NamedLayer>
</StyledLayerDescriptor>
"""


_LAYER_STYLES_DDL = """CREATE TABLE IF NOT EXISTS layer_styles (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  f_table_catalog TEXT(256),
  f_table_schema TEXT(256),
  f_table_name TEXT(256),
  f_geometry_column TEXT(256),
  styleName TEXT(30),
  styleQML TEXT,
  styleSLD TEXT,
  useAsDefault BOOLEAN,
  description TEXT,
  owner TEXT(30),
  ui TEXT(30),
  update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)"""


def embed_gpkg_style(gpkg_path: str | os.PathLike, layer: str, classes: Sequence[ClassInfo | Category], *,
                     field: str | None = "class", style_name: str | None = None,
                     description: str = "geoseg land-cover classes") -> str:
    """Store a categorized style as ``layer``'s default style in the GeoPackage's ``layer_styles``.

    ``classes``: the model's :class:`ClassInfo` list (categories on the integer ``class`` field), or
    :class:`Category` items for any field (e.g. ``confidence`` = ``'low'``/``'high'``); ``field=None``
    with one category stores a single-symbol style.  The field must exist in the layer.

    Creates ``layer_styles`` (QGIS's schema) when missing and registers it in ``gpkg_contents`` as an
    attributes table, as QGIS does; replaces an earlier style of the same name and clears ``useAsDefault``
    on the layer's other styles.  The GeoPackage is modified on a copy that is renamed into place, so a
    reader never sees a half-written file.  Returns the style name.
    """
    src = Path(gpkg_path)
    if not src.is_file():
        raise InputError(f"{src} does not exist; write the GeoPackage before embedding its style")
    name = style_name or layer
    tmp = temp_path(src)
    try:
        shutil.copyfile(src, tmp)
        _store_style(tmp, src, layer, classes, field, name, description)
        publish(tmp, src)
    except sqlite3.DatabaseError as e:
        raise InputError(f"{src} is not a readable GeoPackage ({e}); re-create it with geoseg vectorize") from None
    except OSError as e:
        raise OutputError(f"cannot update {src} ({e.strerror or e}); check the folder is writable") from None
    finally:
        remove_quietly(tmp, f"{tmp}-journal")
    return name


def _store_style(gpkg: Path, src: Path, layer: str, classes: Sequence[ClassInfo | Category], field: str | None,
                 name: str, description: str) -> None:
    """Write the style rows into the GeoPackage copy ``gpkg`` (``src``: the name used in messages)."""
    con = sqlite3.connect(gpkg)
    try:
        row = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                          (layer,)).fetchone()
        if row is None:
            known = [r[0] for r in con.execute("SELECT table_name FROM gpkg_geometry_columns")]
            raise InputError(f"{src} has no feature layer {layer!r} (layers: {', '.join(known) or 'none'}); "
                             "pass the vector layer's name")
        geom_col = row[0]
        if field is not None:
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{layer.replace(chr(34), chr(34) * 2)}")')]
            if field not in cols:
                raise InputError(f"layer {layer!r} of {src} has no field {field!r} to style by "
                                 f"(fields: {', '.join(cols)})")
        with con:
            con.execute(_LAYER_STYLES_DDL)
            con.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                "SELECT 'layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles', "
                "strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                "WHERE NOT EXISTS (SELECT 1 FROM gpkg_contents WHERE table_name = 'layer_styles')"
            )
            con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
            con.execute("DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?", (layer, name))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, 'geoseg', NULL, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                (layer, geom_col, name, vector_qml(classes, field), vector_sld(classes, layer, field),
                 description),
            )
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# change and monitoring products
# ---------------------------------------------------------------------------------------------

#: alerts.gpkg layer ``alerts``: categorized on ``confidence``.
ALERT_CATEGORIES = (Category("high", "high confidence", "#D7191C"), Category("low", "low confidence", "#FDAE61"),
                    Category("rejected", "rejected", "#9E9E9E"))
#: loss.gpkg layer ``loss``: one symbol (every polygon is forest loss).
LOSS_CATEGORY = Category("forest_loss", "forest loss", "#E31A1C")

#: GFW date-confidence encoding (``alerts_gfw.tif``): (upper bound, colour, alpha, label) of each range.
GFW_RANGES = ((0, "#000000", 0, "no alert"), (29999, "#FDAE61", 255, "low confidence (2xxxx)"),
              (39999, "#D7191C", 255, "high confidence (3xxxx)"))


def gfw_qml() -> str:
    """QML of a discrete pseudocolour renderer for the GFW date-confidence raster (0 transparent)."""
    items = "\n".join(
        f'            <item value="{v}" color="{c.lower()}" label={quoteattr(lab)} alpha="{a}"/>'
        for v, c, a, lab in GFW_RANGES
    )
    transparency = _transparent(0, 0)  # no alert
    return _pseudocolor_qml(1, "0", "39999", items, transparency, ramp="DISCRETE", mode=2,
                            provider=_NEAREST_PROVIDER + "\n")


def write_gfw_qml(raster_path: str | os.PathLike) -> str:
    """Write ``<raster>.qml`` for ``alerts_gfw.tif`` (low orange, high red, no alert transparent)."""
    if not Path(raster_path).exists():
        raise InputError(f"{raster_path} does not exist; write the raster before its style")
    return atomic_write_text(qml_path(raster_path), gfw_qml())
