"""``report.html``: a self-contained HTML page describing one ``geoseg predict`` run.

Built from ``OUT/run.json`` (and the model package's card when its path still exists): inputs, a model
card summary, the class-area table (pixels, hectares, share), the quicklook embedded as a ``data:`` URI,
the run options and relative links to the output files.

Self-contained: one file, inline CSS, no JavaScript, images embedded, no reference to anything on a
network (a Content-Security-Policy ``<meta>`` makes the browser refuse any that slipped in).  Every piece
of text is escaped with :func:`html.escape`.  Extra blocks (e.g. a monitoring/change summary) are passed
as ``sections``: ``(title, html)`` pairs; their HTML is the caller's and is checked to reference nothing
external (build it with :func:`html_table` / :func:`embed_png`, which escape and embed).

No torch, no dask.  Written atomically (a temporary file beside the target, then ``os.replace``).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from geoseg._util.atomic import atomic_write_text
from geoseg.delivery.stac import read_record
from geoseg.errors import InputFileError, OutputExistsError, ParameterError

__all__ = ["write_report", "render_report", "write_change_report", "change_sections", "write_monitor_report",
           "monitor_sections", "write_monitor_index", "monitor_index_html", "confidence_totals", "html_table",
           "embed_png", "external_references", "REPORT_NAME"]

REPORT_NAME = "report.html"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")

#: Files a run folder may hold, in the order the report lists them, with a description.
_KNOWN_FILES = [
    ("landcover.tif", "land-cover classes (COG, uint8, nodata 255)"),
    ("probabilities.tif", "class probabilities, one band per class (COG, percent)"),
    ("confidence.tif", "confidence: maximum class probability (COG, percent)"),
    ("landcover.gpkg", "land-cover polygons (GeoPackage, styled)"),
    ("landcover.parquet", "land-cover polygons (GeoParquet)"),
    ("landcover.fgb", "land-cover polygons (FlatGeobuf)"),
    ("landcover.geojson", "land-cover polygons (GeoJSON)"),
    ("landcover.qml", "QGIS style of landcover.tif"),
    ("probabilities.qml", "QGIS style of probabilities.tif"),
    ("confidence.qml", "QGIS style of confidence.tif"),
    ("landcover.tif.aux.xml", "GDAL raster attribute table and category names of landcover.tif"),
    ("quicklook.png", "quicklook with legend"),
    ("run.json", "run record (what was run, class pixel counts)"),
    ("item.json", "STAC Item (catalogue metadata with checksums)"),
]

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#1f2933;font:14px/1.45 system-ui,-apple-system,"Segoe UI","DejaVu Sans",
 Arial,sans-serif}
main{max-width:1160px;margin:0 auto;padding:20px 20px 40px}
header{display:flex;justify-content:space-between;align-items:flex-end;gap:16px;border-bottom:3px solid #2f6f4f;
 padding-bottom:10px;margin-bottom:14px}
h1{font-size:24px;margin:0;color:#14301f}
h1 small{display:block;font-size:13px;font-weight:normal;color:#52606d;margin-top:2px}
.runid{text-align:right;color:#52606d;font-size:12px}
.runid code{font-size:12px}
h2{font-size:16px;margin:0 0 10px;color:#14301f}
h3{font-size:13px;margin:12px 0 4px;color:#323f4b;text-transform:capitalize}
section,.card{background:#fff;border:1px solid #d9dee3;border-radius:6px;padding:14px 16px;margin-bottom:14px}
.warn{background:#fff4e0;border:1px solid #e3a33b;border-left:6px solid #e3a33b;border-radius:6px;
 padding:10px 14px;margin-bottom:14px}
.facts{display:grid;grid-template-columns:repeat(6,1fr);gap:10px;margin-bottom:14px}
.fact{background:#fff;border:1px solid #d9dee3;border-radius:6px;padding:8px 10px}
.fact b{display:block;font-size:17px;color:#14301f;overflow-wrap:anywhere}
.fact span{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#52606d}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:14px;align-items:start}
.grid2 section{margin-bottom:0}
.stack{display:flex;flex-direction:column;gap:14px}
#quicklook figure img{max-width:900px;margin:0 auto;border:none}
.wide{margin-top:14px}
figure{margin:0}
figure img{display:block;width:100%;height:auto;border:1px solid #e4e7eb}
figcaption{font-size:12px;color:#52606d;margin-top:6px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 6px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f5f7f9;font-weight:600;color:#323f4b}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:600;border-top:2px solid #9aa5b1;border-bottom:none}
tr.nodata td{color:#7b8794}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #52606d;border-radius:2px;vertical-align:-2px;
 margin-right:6px}
.bar{display:inline-block;height:9px;background:#2f6f4f;border-radius:2px;vertical-align:middle;margin-left:6px}
.barbox{display:inline-block;width:44px;text-align:left}
#class-areas td{white-space:nowrap}
#class-areas td.name{white-space:normal;overflow-wrap:anywhere}
table.kv th{width:34%;background:none;font-weight:600;color:#52606d}
code,.path{font-family:"DejaVu Sans Mono",Consolas,monospace;font-size:12px;overflow-wrap:anywhere}
.muted{color:#7b8794}
a{color:#1f5fa8}
footer{color:#7b8794;font-size:12px;text-align:center;margin-top:10px}
@media (max-width:900px){.grid2{grid-template-columns:1fr}.facts{grid-template-columns:repeat(3,1fr)}}
@media print{body{background:#fff}section,.card,.fact{border-color:#bbb}a{color:inherit}}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ----------------------------------------------------------------------------------------------- helpers

def _e(value: Any) -> str:
    """Escape anything as HTML text (quotes included, so it is also safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = (),
               table_id: str | None = None, css_class: str | None = None) -> str:
    """An HTML table whose cells are escaped text; columns in ``numeric`` are right-aligned."""
    num = set(numeric)
    attrs = (f' id="{_e(table_id)}"' if table_id else "") + (f' class="{_e(css_class)}"' if css_class else "")
    head = "".join(f'<th{" class=n" if i in num else ""}>{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if i in num else ""}>{_e(v)}</td>' for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def embed_png(path: str | os.PathLike, alt: str = "", caption: str | None = None) -> str:
    """A ``<figure>`` with the PNG at ``path`` embedded as a base64 ``data:`` URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


class _RefParser(HTMLParser):
    """Collects every URL-bearing attribute and CSS ``url(...)``/``@import`` of a document."""

    URL_ATTRS = {"src", "href", "srcset", "action", "formaction", "data", "poster", "background", "xlink:href",
                 "manifest", "cite", "longdesc", "ping", "codebase", "archive", "icon"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if v is None:
                continue
            if k in self.URL_ATTRS:
                self.refs.append((tag, k, v))
            elif k == "style":
                self.refs += [(tag, "style", u) for u in _css_urls(v)]
            elif k == "content" and tag == "meta" and "url=" in v.lower():  # <meta http-equiv=refresh>
                self.refs.append((tag, k, v.split("=", 1)[-1].split("url=", 1)[-1]))
        if tag == "style":
            self._in_style = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.refs += [("style", "css", u) for u in _css_urls(data)]


def _css_urls(css: str) -> list[str]:
    urls = re.findall(r"url\(\s*['\"]?([^'\")]*)", css, flags=re.I)
    urls += re.findall(r"@import\s+['\"]([^'\"]*)", css, flags=re.I)
    return urls


def external_references(document: str) -> list[str]:
    """URLs in ``document``'s markup/CSS that would be fetched or followed off this folder.

    Allowed: ``data:`` URIs, ``#fragments`` and relative paths (links to files beside the report).
    Plain text mentioning ``https://...`` is not a reference and is not reported.
    """
    p = _RefParser()
    p.feed(document)
    p.close()
    bad = []
    for tag, attr, value in p.refs:
        v = value.strip()
        low = v.lower()
        if not v or low.startswith("data:") or v.startswith("#"):
            continue
        if v.startswith("//") or v.startswith("\\\\") or re.match(r"^[a-z][a-z0-9+.\-]*:", low):
            bad.append(f"<{tag} {attr}={v!r}>")
    return bad


def _fmt_int(n: Any) -> str:
    try:
        return f"{int(n):,}".replace(",", "\u2009")  # thin space: unambiguous in any locale
    except (TypeError, ValueError):
        return "—"


def _fmt_num(x: float | None, digits: int = 2) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:,.{digits}f}".replace(",", "\u2009")


def _fmt_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _colour(c: Any) -> str:
    return c if isinstance(c, str) and _HEX.match(c) else "#888888"


def _kv(rows: Iterable[tuple[str, Any]], *, code: Sequence[str] = ()) -> str:
    out = []
    for k, v in rows:
        if v is None or v == "":
            continue
        cell = f'<span class="path">{_e(v)}</span>' if k in code else _e(v)
        out.append(f"<tr><th>{_e(k)}</th><td>{cell}</td></tr>")
    return '<table class="kv">' + "".join(out) + "</table>"


def _short(value: Any, limit: int = 160) -> str:
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return _fmt_int(v)
    return _short(v, 120)


def _flatten(extra: Mapping[str, Any], limit: int = 14) -> list[tuple[str, list[tuple[str, str]]]]:
    """Scalar leaves of the card's free-form entries (metrics, training), grouped by their parent key."""
    groups: dict[str, list[tuple[str, str]]] = {}

    def walk(group: str, key: str, v: Any, depth: int) -> None:
        if isinstance(v, Mapping):
            if depth >= 3:
                groups.setdefault(group, []).append((key, f"{len(v)} entries"))
                return
            sub_group = f"{group} · {key}" if key else group
            for k, sub in sorted(v.items(), key=lambda kv: isinstance(kv[1], Mapping)):  # leaves first
                if str(k) not in ("per_class", "confusion_matrix", "config"):
                    walk(sub_group, str(k), sub, depth + 1)
        elif isinstance(v, (list, tuple)):
            if len(v) <= 6 and all(isinstance(x, (str, int, float, bool)) or x is None for x in v):
                groups.setdefault(group, []).append((key, ", ".join(_scalar(x) for x in v)))
            else:
                groups.setdefault(group, []).append((key, f"{len(v)} items"))
        elif v is not None:
            groups.setdefault(group, []).append((key, _scalar(v)))

    for k in sorted(extra):
        walk(str(k), "", extra[k], 1) if isinstance(extra[k], Mapping) else walk("model card", str(k), extra[k], 1)
    out, n = [], 0
    for g, rows in groups.items():
        if n >= limit:
            break
        rows = [(k.replace("_", " "), v) for k, v in rows[: limit - n]]
        n += len(rows)
        out.append((g.replace("_", " "), rows))
    return out


def _crs_label(wkt: str | None) -> tuple[str, str | None]:
    """A short CRS label and the CRS's units ('metre', 'degree', ...)."""
    if not wkt:
        return "none (pixel grid)", None
    try:
        from rasterio.crs import CRS

        crs = CRS.from_wkt(wkt)
        epsg = crs.to_epsg()
        name = crs.to_dict().get("proj") if epsg is None else None
        label = f"EPSG:{epsg}" if epsg else (f"custom ({name})" if name else "custom CRS")
        try:
            import pyproj

            label += f" · {pyproj.CRS.from_wkt(wkt).name}"
        except Exception:  # pragma: no cover - pyproj always present with rasterio wheels
            pass
        units = "degree" if crs.is_geographic else (crs.linear_units or None)
        return label, units
    except Exception:
        return "custom CRS", None


# ---------------------------------------------------------------------------------------------- sections

def _change_record(out: Path) -> dict[str, Any]:
    return read_record(out / "change.json", f"run geoseg change into {out} first")


def _read_record(out: Path) -> dict[str, Any]:
    if not out.is_dir():
        raise InputFileError(f"{out} is not a folder; give the output folder of geoseg predict")
    return read_record(out / "run.json", f"run geoseg predict into {out} first", fix="re-run geoseg predict")


def _read_card(record: dict[str, Any]):
    """The model card from the package path in run.json, or (None, why not)."""
    path = (record.get("model") or {}).get("path")
    if not path:
        return None, "run.json names no model package path"
    if not Path(path).exists():
        return None, f"the model package {path} no longer exists; summary from run.json only"
    try:
        from geoseg.model.package import read_card

        return read_card(path), None
    except Exception as e:  # a broken or replaced package must not stop the report
        return None, f"the model card at {path} could not be read ({e})"


def _count(v: Any) -> int:
    try:
        return max(0, int(v))
    except (TypeError, ValueError):
        return 0


def _class_rows(record: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    classes = sorted(record.get("classes") or [], key=lambda c: c.get("value", 0))
    pixels: Mapping[str, int] = record.get("class_pixels") or {}
    area = record.get("pixel_area_m2")
    area = float(area) if isinstance(area, (int, float)) and math.isfinite(area) and area > 0 else None
    total = sum(_count(pixels.get(c.get("name"), 0)) for c in classes)
    nodata = record.get("nodata_pixels")
    rows, data = [], []
    for c in classes:
        n = _count(pixels.get(c.get("name"), 0))
        share = 100.0 * n / total if total else 0.0
        ha = n * area / 10_000 if area is not None else None
        data.append({"value": c.get("value"), "name": c.get("name"), "color": _colour(c.get("color")),
                     "pixels": n, "ha": ha, "share": share})
        rows.append(
            f'<tr class="class-row" data-class="{_e(c.get("name"))}">'
            f'<td class=n>{_e(c.get("value"))}</td>'
            f'<td class="name"><span class="sw" style="background:{_colour(c.get("color"))}"></span>'
            f'{_e(c.get("name"))}</td>'
            f"<td class=n>{_fmt_int(n)}</td><td class=n>{_fmt_num(ha)}</td>"
            f'<td class=n>{share:.1f} %<span class="barbox"><span class="bar" '
            f'style="width:{max(share * 0.4, 0.0):.1f}px"></span></span></td></tr>'
        )
    tot_ha = total * area / 10_000 if area is not None else None
    rows.append(f'<tr class="total"><td></td><td>all classes</td><td class=n>{_fmt_int(total)}</td>'
                f'<td class=n>{_fmt_num(tot_ha)}</td><td class=n>100.0 %<span class="barbox"></span></td></tr>')
    if nodata:
        nd_ha = int(nodata) * area / 10_000 if area is not None else None
        rows.append(f'<tr class="nodata"><td class=n>255</td><td>no valid input (nodata)</td>'
                    f'<td class=n>{_fmt_int(nodata)}</td><td class=n>{_fmt_num(nd_ha)}</td>'
                    f'<td class=n>—<span class="barbox"></span></td></tr>')
    note = ("Share of the mapped (valid) pixels. "
            + (f"Pixel area {_fmt_num(area, 1)} m²" + (" (geodesic, scene centre; approximate for large "
               "geographic grids)" if _crs_label((record.get("grid") or {}).get("crs"))[1] == "degree" else "")
               + "." if area is not None else "Pixel area unknown (no CRS): hectares not given."))
    table = ('<table id="class-areas"><thead><tr><th class=n>value</th><th>class</th><th class=n>pixels</th>'
             '<th class=n>hectares</th><th class=n>share</th></tr></thead><tbody>' + "".join(rows)
             + f'</tbody></table><p class="muted">{_e(note)}</p>')
    return table, data


def _quicklook_html(out: Path, record: dict[str, Any]) -> str:
    ql = out / "quicklook.png"
    caption = "quicklook.png: class map with legend, scale bar and north arrow"
    if ql.is_file():
        return embed_png(ql, alt="quicklook of the land-cover map", caption=caption)
    lc = out / (record.get("outputs") or {}).get("landcover", "landcover.tif")
    if lc.is_file():  # render one for the report only (nothing is added to the run folder)
        try:
            from geoseg.delivery.quicklook import write_quicklook
            from geoseg.io.codes import ClassInfo

            classes = [ClassInfo(int(c["value"]), str(c["name"]), _colour(c.get("color")))
                       for c in record.get("classes") or []] or None
            with tempfile.TemporaryDirectory(prefix="geoseg-report-") as tmp:
                png = write_quicklook(lc, Path(tmp) / "quicklook.png", classes,
                                      class_pixels=record.get("class_pixels"))
                return embed_png(png, alt="quicklook of the land-cover map",
                                 caption="rendered for this report (the run folder has no quicklook.png)")
        except Exception as e:
            return f'<p class="muted">No quicklook: {_e(e)}</p>'
    return '<p class="muted">No quicklook.png and no land-cover raster in this folder.</p>'


def _inputs_html(record: dict[str, Any]) -> str:
    grid = record.get("grid") or {}
    t = grid.get("transform") or []
    crs, units = _crs_label(grid.get("crs"))
    unit = {"metre": " m", "meter": " m", "m": " m", "degree": "°"}.get(units or "", f" {units or 'CRS units'}")
    res = f"{abs(t[0]):.6g} × {abs(t[4]):.6g}{unit}" if len(t) >= 6 else None
    origin = f"x {t[2]:.10g}, y {t[5]:.10g}" if len(t) >= 6 else None
    scene = record.get("scene")
    exists = None if not scene else ("yes" if Path(scene).exists() else "no (moved or deleted since the run)")
    bands = record.get("bands")
    return _kv([
        ("scene", scene), ("scene still present", exists),
        ("bands read", ", ".join(map(str, bands)) if isinstance(bands, list) else bands),
        ("size", f"{_fmt_int(grid.get('width'))} × {_fmt_int(grid.get('height'))} px" if grid else None),
        ("CRS", crs), ("pixel size", res), ("origin (upper left)", origin),
    ], code=("scene",))


def _model_html(record: dict[str, Any]) -> str:
    m = record.get("model") or {}
    card, why = _read_card(record)
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    rows: list[tuple[str, Any]] = [
        ("id", m.get("id")), ("version", m.get("version")),
        ("architecture", " / ".join(str(v) for v in (m.get("architecture"), m.get("encoder")) if v)),
        ("trained", {True: "yes", False: "NO: untrained network, classes are meaningless"}.get(m.get("trained"),
                                                                                              m.get("trained"))),
        ("package", m.get("path")),
    ]
    if card is not None:
        if card.id != m.get("id") or card.version != m.get("version"):
            rows.append(("note", f"the package now holds {card.id} {card.version}, not the model of this run"))
        else:
            rows += [
                ("description", card.description),
                ("bands", ", ".join(card.bands)),
                ("normalisation", f"{card.normalization.kind}"),
                ("tile / overlap", f"{card.tile_size} / {card.overlap} px (output stride {card.output_stride})"),
                ("ground sampling", f"{card.gsd_m:g} m" if card.gsd_m else None),
                ("input nodata", card.input_nodata),
                ("classes", len(card.classes)),
            ]
            groups = _flatten(card.extra or {})
    note = f'<p class="muted">{_e(why)}</p>' if why else ""
    extra = "".join(f'<h3>{_e(g)}</h3>' + _kv(rows) for g, rows in groups)
    return _kv(rows, code=("package",)) + note + extra


def _options_html(record: dict[str, Any]) -> str:
    opts = record.get("options") or {}
    rows = [(k.replace("_", " "), v if not isinstance(v, (dict, list)) else _short(v)) for k, v in opts.items()]
    rows += [("tiles", record.get("tiles")), ("computed pixels", _fmt_int(record.get("computed_pixels"))
                                               if record.get("computed_pixels") is not None else None),
             ("run time", f"{record['seconds']:.1f} s" if isinstance(record.get("seconds"), (int, float)) else None),
             ("host", record.get("host")), ("geoseg", record.get("geoseg_version"))]
    return _kv(rows)


def _outputs_html(out: Path, record: dict[str, Any], pending: Sequence[str]) -> str:
    known = list(_KNOWN_FILES)
    names = {n for n, _ in known}
    for key, name in (record.get("outputs") or {}).items():
        if name not in names:
            known.insert(0, (name, str(key)))
            names.add(name)
    rows = []
    for name, what in known:
        p = out / name
        if p.is_file():
            size = _fmt_size(p.stat().st_size)
        elif name in pending:
            size = "—"
        else:
            continue
        rows.append(f'<tr><td><a href="{_e(quote(name))}">{_e(name)}</a></td><td>{_e(what)}</td>'
                    f"<td class=n>{_e(size)}</td></tr>")
    return ('<table id="outputs"><thead><tr><th>file</th><th>content</th><th class=n>size</th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table>"
            '<p class="muted">Links are relative: keep this report in the run folder, beside the files.</p>')


def _facts_html(record: dict[str, Any], classes: list[dict[str, Any]]) -> str:
    grid = record.get("grid") or {}
    crs, _ = _crs_label(grid.get("crs"))
    total_ha = sum(c["ha"] for c in classes if c["ha"] is not None) if classes and classes[0]["ha"] is not None \
        else None
    top = max(classes, key=lambda c: c["pixels"]) if classes and any(c["pixels"] for c in classes) else None
    facts = [
        ("mapped area", f"{_fmt_num(total_ha, 1)} ha" if total_ha is not None else "—"),
        ("largest class", f"{top['name']} ({top['share']:.0f} %)" if top else "—"),
        ("classes", str(len(classes))),
        ("scene size", f"{_fmt_int(grid.get('width'))} × {_fmt_int(grid.get('height'))}" if grid else "—"),
        ("CRS", crs.split(" · ")[0]),
        ("run time", f"{record['seconds']:.1f} s" if isinstance(record.get("seconds"), (int, float)) else "—"),
    ]
    return '<div class="facts">' + "".join(f'<div class="fact"><span>{_e(k)}</span><b>{_e(v)}</b></div>'
                                           for k, v in facts) + "</div>"


# ---------------------------------------------------------------------------------------------- public API

def render_report(out_dir: str | os.PathLike, *, sections: Sequence[tuple[str, str]] = (),
                  title: str | None = None, pending: Sequence[str] = ()) -> str:
    """The report of the run in ``out_dir`` as an HTML string (see :func:`write_report`)."""
    out = Path(out_dir)
    record = _read_record(out)
    checked: list[tuple[str, str]] = []
    for i, sec in enumerate(sections or ()):
        try:
            sec_title, sec_html = sec
        except (TypeError, ValueError):
            raise ParameterError(f"report section {i} must be a (title, html) pair") from None
        bad = external_references(str(sec_html))
        if bad:
            raise ParameterError(f"report section {sec_title!r} references external resources ({bad[0]}); "
                                 "embed images as data: URIs (geoseg.report.embed_png) and link only local files")
        checked.append((str(sec_title), str(sec_html)))

    table, classes = _class_rows(record)
    model = record.get("model") or {}
    scene_name = Path(record.get("scene") or "scene").name
    heading = title or f"Land cover of {scene_name}"
    warn = ""
    if model.get("trained") is False:
        warn = ('<div class="warn" id="untrained"><b>Untrained model.</b> This map was produced by a network '
                "with random weights: it demonstrates the pipeline (tiling, blending, COG, palette) but its "
                "classes are meaningless.</div>")
    extra = "".join(
        f'<section class="wide extra" id="section-{i + 1}"><h2>{_e(t)}</h2>{h}</section>'
        for i, (t, h) in enumerate(checked)
    )
    body = f"""{warn}
{_facts_html(record, classes)}
<section id="quicklook"><h2>Map</h2>{_quicklook_html(out, record)}</section>
<div class="grid2">
<div class="stack">
<section id="classes"><h2>Class areas</h2>{table}</section>
<section id="inputs"><h2>Inputs</h2>{_inputs_html(record)}</section>
<section id="options"><h2>Processing</h2>{_options_html(record)}</section>
</div>
<div class="stack">
<section id="model"><h2>Model</h2>{_model_html(record)}</section>
</div>
</div>
<section id="outputs-section" class="wide"><h2>Outputs</h2>{_outputs_html(out, record, pending)}</section>
{extra}"""
    doc = _page(heading, f"geoseg land-cover run report · model {model.get('id', '?')}",
                record.get('run_id'), record.get('created'), body, record.get('geoseg_version', ''),
                source="run.json")
    return doc


def write_report(out_dir: str | os.PathLike, *, sections: Sequence[tuple[str, str]] = (),
                 title: str | None = None, name: str = REPORT_NAME, overwrite: bool = True,
                 pending: Sequence[str] = ()) -> str:
    """Write ``out_dir/report.html`` for the ``geoseg predict`` run in ``out_dir``; returns its path.

    ``sections``: extra ``(title, html)`` blocks appended after the standard ones (e.g. a monitoring or
    change summary); ``title`` is escaped, ``html`` is inserted as given and must reference nothing
    external (:class:`~geoseg.errors.ParameterError` otherwise).  ``pending``: names of files written
    *after* the report (e.g. ``item.json``) that it should link to although they do not exist yet.
    ``overwrite=False`` refuses an existing report (:class:`~geoseg.errors.OutputExistsError`).
    Written atomically: a temporary file beside the target, then ``os.replace``.
    """
    target = Path(out_dir) / name
    if not overwrite and target.exists():
        raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")
    doc = render_report(out_dir, sections=sections, title=title, pending=pending)
    return atomic_write_text(target, doc)


# ------------------------------------------------------------------------------- change and monitoring

def _page(heading: str, subtitle: str, run_id: Any, created: Any, body: str, version: Any = "",
          source: str = "") -> str:
    """The report page skeleton (same CSS and Content-Security-Policy as the run report)."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="geoseg {_e(version)}">
<title>{_e(heading)} · geoseg report</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
<h1>{_e(heading)}<small>{_e(subtitle)}</small></h1>
<div class="runid">run <code>{_e(run_id or '?')}</code><br>{_e(created or '')}</div>
</header>
{body}
<footer>Written by geoseg {_e(version)}{" from " + _e(source) if source else ""} · self-contained: no network
access needed</footer>
</main>
</body>
</html>
"""


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    return '<div class="facts">' + "".join(f'<div class="fact"><span>{_e(k)}</span><b>{_e(v)}</b></div>'
                                           for k, v in facts) + "</div>"


def _file_links(folder: Path, files: Sequence[tuple[str, str]], table_id: str, pending: Sequence[str] = ()) -> str:
    """A table of links to the ``files`` present in ``folder``, plus those in ``pending`` (written after the
    report, e.g. ``item.json``; size shown as —)."""
    rows = [f'<tr><td><a href="{_e(quote(n))}">{_e(n)}</a></td><td>{_e(what)}</td>'
            f"<td class=n>{_e(_fmt_size((folder / n).stat().st_size) if (folder / n).is_file() else '—')}</td></tr>"
            for n, what in files if (folder / n).is_file() or n in pending]
    return (f'<table id="{_e(table_id)}"><thead><tr><th>file</th><th>content</th><th class=n>size</th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table>")


_CHANGE_FILES = [("change.tif", "forest change (COG): 0 no change, 1 loss, 2 gain, 255 unobserved"),
                 ("change.qml", "QGIS style of change.tif"),
                 ("loss.gpkg", "forest-loss polygons (GeoPackage, styled)"),
                 ("change_quicklook.png", "before / after / change quicklook"),
                 ("change.json", "change record (inputs, pixel counts, areas)"),
                 ("item.json", "STAC Item (catalogue metadata with checksums)")]


def change_sections(change_dir: str | os.PathLike, pending: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(title, html)`` blocks of a ``geoseg change`` folder (from ``change.json``): loss/gain areas,
    the before/after/change quicklook, inputs and outputs (``pending``: files written after the report that
    it should link to).  Usable as ``write_report(sections=...)``."""
    out = Path(change_dir)
    rec = _change_record(out)
    px = rec.get("pixels") or {}
    area = rec.get("pixel_area_m2")
    area = float(area) if isinstance(area, (int, float)) and area > 0 else None
    names = [("no_change", "no change", "#D9D9D9"), ("forest_loss", "forest loss", "#E31A1C"),
             ("forest_gain", "forest gain", "#33A02C")]
    observed = sum(_count(px.get(k)) for k, _, _ in names)
    rows = []
    for key, label, colour in names:
        n = _count(px.get(key))
        ha = n * area / 1e4 if area else None
        share = 100.0 * n / observed if observed else 0.0
        rows.append(f'<tr class="change-row" data-class="{_e(key)}"><td class="name"><span class="sw" '
                    f'style="background:{colour}"></span>{_e(label)}</td><td class=n>{_fmt_int(n)}</td>'
                    f"<td class=n>{_fmt_num(ha)}</td><td class=n>{share:.2f} %</td></tr>")
    n_un = _count(px.get("unobserved"))
    rows.append(f'<tr class="nodata"><td>unobserved (nodata or masked in either date)</td>'
                f"<td class=n>{_fmt_int(n_un)}</td><td class=n>{_fmt_num(n_un * area / 1e4 if area else None)}</td>"
                "<td class=n>—</td></tr>")
    table = ('<table id="change-areas"><thead><tr><th>change</th><th class=n>pixels</th><th class=n>hectares</th>'
             '<th class=n>share of observed</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    forest = rec.get("forest") or {}
    fdef = (f">= {forest.get('threshold_percent'):g} % forest probability" if rec.get("mode") == "probability"
            and isinstance(forest.get("threshold_percent"), (int, float))
            else f"classes {', '.join(map(str, forest.get('items') or []))}")
    facts = _facts([
        ("forest loss", f"{_fmt_num(rec.get('loss_ha'))} ha"), ("forest gain", f"{_fmt_num(rec.get('gain_ha'))} ha"),
        ("loss polygons", f"{_fmt_int(rec.get('loss_polygons'))} ({_fmt_num(rec.get('loss_polygon_ha'))} ha)"),
        ("min. mapping unit", f"{_fmt_num(rec.get('min_area_ha'))} ha"),
        ("observed", f"{100 * observed / max(1, observed + n_un):.1f} %"),
        ("run time", f"{rec['seconds']:.1f} s" if isinstance(rec.get("seconds"), (int, float)) else "—"),
    ])
    ql = out / "change_quicklook.png"
    figure = (embed_png(ql, alt="before, after and change quicklook",
                        caption="before / after (forest, non-forest, no data) and the change map")
              if ql.is_file() else '<p class="muted">No change_quicklook.png in this folder.</p>')
    inputs = _kv([("before", rec.get("before")), ("after", rec.get("after")),
                  ("before mask", rec.get("before_mask")), ("after mask", rec.get("after_mask")),
                  ("mode", rec.get("mode")), ("forest", fdef), ("aligned", "yes" if rec.get("aligned") else "no"),
                  ("dropped patches (under the MMU)", _fmt_int(rec.get("dropped_polygons"))),
                  ("pixel area", f"{_fmt_num(area, 1)} m²" if area else None)],
                 code=("before", "after", "before mask", "after mask"))
    return [("Forest change", facts + figure + table),
            ("Change inputs", inputs),
            ("Change outputs", _file_links(out, _CHANGE_FILES, "change-outputs", pending))]


def _sections_html(sections: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<section class="wide" id="{_e(t.lower().replace(" ", "-"))}"><h2>{_e(t)}</h2>{h}</section>'
                   for t, h in sections)


def write_change_report(change_dir: str | os.PathLike, *, title: str | None = None,
                        name: str = REPORT_NAME, pending: Sequence[str] = ()) -> str:
    """Write ``report.html`` in a ``geoseg change`` folder: loss/gain areas, the side-by-side quicklook,
    inputs and output links (self-contained, atomic); ``pending``: files written after it (``item.json``)
    to link to.  Returns its path."""
    out = Path(change_dir)
    rec = _change_record(out)
    body = _sections_html(change_sections(out, pending))
    heading = title or f"Forest change: {Path(rec.get('before') or 'before').name} → " \
                       f"{Path(rec.get('after') or 'after').name}"
    doc = _page(heading, "geoseg change report", rec.get("run_id"), rec.get("created"), body,
                rec.get("geoseg_version", ""))
    return atomic_write_text(out / name, doc)


#: at most this many alerts are listed in a monitoring report (the GeoPackage has them all)
MAX_ALERT_ROWS = 500
_CONFIDENCE_COLOURS = {"high": "#D7191C", "low": "#FDAE61", "rejected": "#9E9E9E"}


def _read_alerts(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alerts, per-scene summary rows) of a monitoring AOI folder's ``alerts.gpkg``."""
    import pyogrio

    gpkg = folder / "alerts.gpkg"
    if not gpkg.is_file():
        raise InputFileError(f"{gpkg} does not exist; run geoseg monitor run first")
    alerts = pyogrio.read_dataframe(gpkg, layer="alerts", read_geometry=False).to_dict("records")
    summary = pyogrio.read_dataframe(gpkg, layer="aoi_summary", read_geometry=False).to_dict("records")
    return alerts, summary


def confidence_totals(alerts: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, float, int]]:
    """Current (not superseded) alerts by confidence: ``{confidence: (alerts, hectares, pixels)}`` for
    ``high``, ``low`` and ``rejected``."""
    active = [a for a in alerts if a.get("status") != "superseded"]
    out = {}
    for conf in _CONFIDENCE_COLOURS:
        sel = [a for a in active if a.get("confidence") == conf]
        out[conf] = (len(sel), sum(float(a["area_ha"]) for a in sel), sum(int(a["n_pixels"]) for a in sel))
    return out


def _swatch(conf: str) -> str:
    return f'<span class="sw" style="background:{_CONFIDENCE_COLOURS[conf]}"></span>{_e(conf)}'


def monitor_sections(aoi_folder: str | os.PathLike, pending: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(title, html)`` blocks of one monitoring AOI folder (``alerts.gpkg``): area by confidence, the
    alert list (newest first, at most :data:`MAX_ALERT_ROWS`), the per-scene summary and the output links
    (``pending``: files written after the report, e.g. ``item.json``)."""
    folder = Path(aoi_folder)
    alerts, summary = _read_alerts(folder)
    by_conf = [f'<tr class="conf-row" data-confidence="{conf}"><td class="name">{_swatch(conf)}</td>'
               f"<td class=n>{n}</td><td class=n>{_fmt_num(ha, 4)}</td><td class=n>{_fmt_int(px)}</td></tr>"
               for conf, (n, ha, px) in confidence_totals(alerts).items()]
    n_sup = sum(a.get("status") == "superseded" for a in alerts)
    conf_table = ('<table id="area-by-confidence"><thead><tr><th>confidence</th><th class=n>alerts</th>'
                  '<th class=n>hectares</th><th class=n>pixels</th></tr></thead><tbody>' + "".join(by_conf)
                  + "</tbody></table>"
                  + f'<p class="muted">Current alerts; {n_sup} superseded alert(s) are listed below but not counted.</p>')
    ordered = sorted(alerts, key=lambda a: (str(a.get("first_detected")), str(a.get("alert_id"))), reverse=True)
    shown = ordered[:MAX_ALERT_ROWS]
    alert_table = html_table(
        ["alert", "confidence", "status", "first detected", "last detected", "ha", "pixels", "updated"],
        [[a.get("alert_id"), a.get("confidence"), a.get("status"), a.get("first_detected"),
          a.get("last_detected"), _fmt_num(float(a.get("area_ha") or 0), 4), _fmt_int(a.get("n_pixels")),
          a.get("updated_at")] for a in shown], numeric=[5, 6], table_id="alert-list")
    if len(ordered) > len(shown):
        alert_table += (f'<p class="muted">{len(ordered) - len(shown)} older alert(s) not listed; '
                        "alerts.gpkg has them all.</p>")
    scenes = html_table(
        ["date", "scene", "observed", "low", "high", "rejected", "low ha", "high ha", "late"],
        [[r.get("date"), r.get("scene_id"), f"{100 * float(r.get('observed_fraction') or 0):.1f} %",
          r.get("alerts_low"), r.get("alerts_high"), r.get("alerts_rejected"),
          _fmt_num(float(r.get("area_low_ha") or 0), 4), _fmt_num(float(r.get("area_high_ha") or 0), 4),
          "yes" if r.get("late") else ""] for r in summary], numeric=[2, 3, 4, 5, 6, 7], table_id="scene-summary")
    files = [("alerts.gpkg", "alerts (layer alerts, styled by confidence) and per-scene summary"),
             ("alerts_gfw.tif", "GFW date-confidence raster (COG)"), ("alerts_gfw.qml", "QGIS style of alerts_gfw.tif")]
    files += [(p.name, "alerts new or changed by a run (GeoJSON, WGS84)")
              for p in sorted(folder.glob("changes_since_*.geojson"))]
    files.append(("item.json", "STAC Item (catalogue metadata with checksums)"))
    return [("Area by confidence", conf_table), ("Alerts", alert_table), ("Scenes applied", scenes),
            ("Monitoring outputs", _file_links(folder, files, "monitor-outputs", pending))]


def _now() -> str:
    import time as _time

    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime())


def write_monitor_report(aoi_folder: str | os.PathLike, *, aoi_id: str | None = None, run_id: str | None = None,
                         title: str | None = None, name: str = REPORT_NAME, pending: Sequence[str] = ()) -> str:
    """Write ``report.html`` in a monitoring AOI folder (``OUT/<aoi_id>/``): area by confidence, the alert
    list and the scenes applied (self-contained, atomic); ``pending``: files written after it to link to.
    Returns its path."""
    from geoseg._version import __version__

    folder = Path(aoi_folder)
    aoi = aoi_id or folder.name
    body = _sections_html(monitor_sections(folder, pending))
    doc = _page(title or f"Forest-loss alerts: {aoi}", "geoseg monitoring report", run_id, _now(), body,
                __version__)
    return atomic_write_text(folder / name, doc)


# ------------------------------------------------------------------------------ monitoring run index

def _aoi_index_row(out: Path, aoi: str) -> tuple[str, dict[str, tuple[int, float, int]] | None]:
    """One ``<tr>`` of the monitoring index and the AOI's totals by confidence (None: no outputs yet)."""
    folder = out / aoi
    link = f'<a href="{_e(quote(aoi))}/{REPORT_NAME}">{_e(aoi)}</a>' if (folder / REPORT_NAME).is_file() \
        else _e(aoi)
    if not (folder / "alerts.gpkg").is_file():
        return (f'<tr class="aoi-row" data-aoi="{_e(aoi)}"><td class="name">{link}</td>'
                '<td colspan="8" class="muted">no outputs yet (no scene applied)</td></tr>'), None
    alerts, summary = _read_alerts(folder)
    totals = confidence_totals(alerts)
    cells = "".join(f"<td class=n>{n}</td><td class=n>{_fmt_num(ha, 4)}</td>" for n, ha, _ in totals.values())
    dates = sorted(str(r.get("date")) for r in summary)
    item = (f' · <a href="{_e(quote(aoi))}/item.json">item.json</a>' if (folder / "item.json").is_file() else "")
    return (f'<tr class="aoi-row" data-aoi="{_e(aoi)}"><td class="name">{link}{item}</td>{cells}'
            f"<td class=n>{len(summary)}</td><td>{_e(dates[-1] if dates else '—')}</td></tr>"), totals


def monitor_index_html(out_dir: str | os.PathLike, aoi_ids: Sequence[str], *, run_id: str | None = None,
                       title: str | None = None) -> str:
    """The run-level monitoring index (``OUT/report.html``) as HTML: one row per AOI with its current
    alerts and hectares by confidence, the scenes applied and links to the AOI's report and STAC Item."""
    from geoseg._version import __version__

    out = Path(out_dir)
    rows, sums = [], {c: [0, 0.0] for c in _CONFIDENCE_COLOURS}
    for aoi in aoi_ids:
        row, totals = _aoi_index_row(out, aoi)
        rows.append(row)
        for conf, (n, ha, _) in (totals or {}).items():
            sums[conf][0] += n
            sums[conf][1] += ha
    head = "".join(f'<th class=n>{_swatch(c)}</th><th class=n>{_e(c)} ha</th>' for c in _CONFIDENCE_COLOURS)
    total = "".join(f"<td class=n>{n}</td><td class=n>{_fmt_num(ha, 4)}</td>" for n, ha in sums.values())
    table = (f'<table id="aoi-index"><thead><tr><th>AOI</th>{head}<th class=n>scenes</th><th>last scene</th></tr>'
             "</thead><tbody>" + "".join(rows) + "</tbody>"
             f'<tfoot><tr class="total"><td>all AOIs</td>{total}<td></td><td></td></tr></tfoot></table>'
             '<p class="muted">Current alerts (superseded ones are not counted). Alerts: number of alert polygons; '
             "ha: their area. Links are relative: keep this page in the monitoring output folder.</p>")
    facts = _facts([("areas of interest", str(len(aoi_ids))), ("high alerts", str(sums["high"][0])),
                    ("low alerts", str(sums["low"][0])),
                    ("alert area", f"{_fmt_num(sums['high'][1] + sums['low'][1], 2)} ha")])
    cat = ('<p><a href="catalog.json">catalog.json</a>: STAC Catalog linking every AOI\'s item.json</p>'
           if (out / "catalog.json").is_file() else "")
    body = facts + _sections_html([("Areas of interest", table + cat)])
    return _page(title or "Forest-loss monitoring", "geoseg monitoring index", run_id, _now(), body, __version__)


def write_monitor_index(out_dir: str | os.PathLike, aoi_ids: Sequence[str], *, run_id: str | None = None,
                        title: str | None = None, name: str = REPORT_NAME) -> str:
    """Write ``OUT/report.html`` of a monitoring output folder (see :func:`monitor_index_html`), atomically;
    returns its path."""
    return atomic_write_text(Path(out_dir) / name, monitor_index_html(out_dir, aoi_ids, run_id=run_id, title=title))
