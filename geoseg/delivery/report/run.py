"""``report.html`` of one ``geoseg predict`` run, built from ``OUT/run.json`` (and the model package's card
when its path still exists): inputs, a model card summary, the class-area table (pixels, hectares, share),
the quicklook embedded as a ``data:`` URI, the run options and relative links to the output files.

Extra blocks (e.g. a monitoring/change summary) are passed as ``sections``: ``(title, html)`` pairs; their
HTML is the caller's and is checked to reference nothing external (build it with
:func:`~geoseg.delivery.report.page.html_table` / :func:`~geoseg.delivery.report.page.embed_png`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geoseg._util.atomic import atomic_write_text
from geoseg.delivery.lineage import input_lines
from geoseg.delivery.report.page import (
    REPORT_NAME,
    as_count,
    embed_png,
    esc,
    external_references,
    fact_boxes,
    file_links,
    fmt_int,
    fmt_num,
    kv_table,
    page,
    safe_colour,
)
from geoseg.delivery.stac import read_record
from geoseg.errors import InputFileError, OutputExistsError, ParameterError

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

#: How run.json's ``model.trained`` reads in the report (other values are shown as they are).
_TRAINED: dict[Any, str] = {True: "yes", False: "NO: untrained network, classes are meaningless"}


def _short(value: Any, limit: int = 160) -> str:
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return fmt_int(v)
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


def _class_rows(record: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    classes = sorted(record.get("classes") or [], key=lambda c: c.get("value", 0))
    pixels: Mapping[str, int] = record.get("class_pixels") or {}
    area = record.get("pixel_area_m2")
    area = float(area) if isinstance(area, (int, float)) and math.isfinite(area) and area > 0 else None
    total = sum(as_count(pixels.get(c.get("name"), 0)) for c in classes)
    nodata = record.get("nodata_pixels")
    rows, data = [], []
    for c in classes:
        n = as_count(pixels.get(c.get("name"), 0))
        share = 100.0 * n / total if total else 0.0
        ha = n * area / 10_000 if area is not None else None
        data.append({"value": c.get("value"), "name": c.get("name"), "color": safe_colour(c.get("color")),
                     "pixels": n, "ha": ha, "share": share})
        rows.append(
            f'<tr class="class-row" data-class="{esc(c.get("name"))}">'
            f'<td class=n>{esc(c.get("value"))}</td>'
            f'<td class="name"><span class="sw" style="background:{safe_colour(c.get("color"))}"></span>'
            f'{esc(c.get("name"))}</td>'
            f"<td class=n>{fmt_int(n)}</td><td class=n>{fmt_num(ha)}</td>"
            f'<td class=n>{share:.1f} %<span class="barbox"><span class="bar" '
            f'style="width:{max(share * 0.4, 0.0):.1f}px"></span></span></td></tr>'
        )
    tot_ha = total * area / 10_000 if area is not None else None
    rows.append(f'<tr class="total"><td></td><td>all classes</td><td class=n>{fmt_int(total)}</td>'
                f'<td class=n>{fmt_num(tot_ha)}</td><td class=n>100.0 %<span class="barbox"></span></td></tr>')
    if nodata:
        nd_ha = int(nodata) * area / 10_000 if area is not None else None
        rows.append(f'<tr class="nodata"><td class=n>255</td><td>no valid input (nodata)</td>'
                    f'<td class=n>{fmt_int(nodata)}</td><td class=n>{fmt_num(nd_ha)}</td>'
                    f'<td class=n>—<span class="barbox"></span></td></tr>')
    note = ("Share of the mapped (valid) pixels. "
            + (f"Pixel area {fmt_num(area, 1)} m²" + (" (geodesic, scene centre; approximate for large "
               "geographic grids)" if _crs_label((record.get("grid") or {}).get("crs"))[1] == "degree" else "")
               + "." if area is not None else "Pixel area unknown (no CRS): hectares not given."))
    table = ('<table id="class-areas"><thead><tr><th class=n>value</th><th>class</th><th class=n>pixels</th>'
             '<th class=n>hectares</th><th class=n>share</th></tr></thead><tbody>' + "".join(rows)
             + f'</tbody></table><p class="muted">{esc(note)}</p>')
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

            classes = [ClassInfo(int(c["value"]), str(c["name"]), safe_colour(c.get("color")))
                       for c in record.get("classes") or []] or None
            with tempfile.TemporaryDirectory(prefix="geoseg-report-") as tmp:
                png = write_quicklook(lc, Path(tmp) / "quicklook.png", classes,
                                      class_pixels=record.get("class_pixels"))
                return embed_png(png, alt="quicklook of the land-cover map",
                                 caption="rendered for this report (the run folder has no quicklook.png)")
        except Exception as e:
            return f'<p class="muted">No quicklook: {esc(e)}</p>'
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
    return kv_table([
        ("scene", scene), ("scene still present", exists),
        *input_lines(record),
        ("bands read", ", ".join(map(str, bands)) if isinstance(bands, list) else bands),
        ("size", f"{fmt_int(grid.get('width'))} × {fmt_int(grid.get('height'))} px" if grid else None),
        ("CRS", crs), ("pixel size", res), ("origin (upper left)", origin),
    ], code=("scene",))


def _model_html(record: dict[str, Any]) -> str:
    m = record.get("model") or {}
    card, why = _read_card(record)
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    rows: list[tuple[str, Any]] = [
        ("id", m.get("id")), ("version", m.get("version")),
        ("architecture", " / ".join(str(v) for v in (m.get("architecture"), m.get("encoder")) if v)),
        ("trained", _TRAINED.get(m.get("trained"), m.get("trained"))),
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
    note = f'<p class="muted">{esc(why)}</p>' if why else ""
    extra = "".join(f'<h3>{esc(g)}</h3>' + kv_table(rows) for g, rows in groups)
    return kv_table(rows, code=("package",)) + note + extra


def _options_html(record: dict[str, Any]) -> str:
    opts = record.get("options") or {}
    rows = [(k.replace("_", " "), v if not isinstance(v, (dict, list)) else _short(v)) for k, v in opts.items()]
    rows += [("tiles", record.get("tiles")), ("computed pixels", fmt_int(record.get("computed_pixels"))
                                               if record.get("computed_pixels") is not None else None),
             ("run time", f"{record['seconds']:.1f} s" if isinstance(record.get("seconds"), (int, float)) else None),
             ("host", record.get("host")), ("geoseg", record.get("geoseg_version"))]
    return kv_table(rows)


def _outputs_html(out: Path, record: dict[str, Any], pending: Sequence[str]) -> str:
    known = list(_KNOWN_FILES)
    names = {n for n, _ in known}
    for key, name in (record.get("outputs") or {}).items():
        if name not in names:
            known.insert(0, (name, str(key)))
            names.add(name)
    return (file_links(out, known, "outputs", pending)
            + '<p class="muted">Links are relative: keep this report in the run folder, beside the files.</p>')


def _facts_html(record: dict[str, Any], classes: list[dict[str, Any]]) -> str:
    grid = record.get("grid") or {}
    crs, _ = _crs_label(grid.get("crs"))
    total_ha = sum(c["ha"] for c in classes if c["ha"] is not None) if classes and classes[0]["ha"] is not None \
        else None
    top = max(classes, key=lambda c: c["pixels"]) if classes and any(c["pixels"] for c in classes) else None
    facts = [
        ("mapped area", f"{fmt_num(total_ha, 1)} ha" if total_ha is not None else "—"),
        ("largest class", f"{top['name']} ({top['share']:.0f} %)" if top else "—"),
        ("classes", str(len(classes))),
        ("scene size", f"{fmt_int(grid.get('width'))} × {fmt_int(grid.get('height'))}" if grid else "—"),
        ("CRS", crs.split(" · ")[0]),
        ("run time", f"{record['seconds']:.1f} s" if isinstance(record.get("seconds"), (int, float)) else "—"),
    ]
    return fact_boxes(facts)


def _checked_sections(sections: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The caller's extra ``(title, html)`` blocks, refused when one is malformed or references anything
    external."""
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
    return checked


def render_report(out_dir: str | os.PathLike, *, sections: Sequence[tuple[str, str]] = (),
                  title: str | None = None, pending: Sequence[str] = ()) -> str:
    """The report of the run in ``out_dir`` as an HTML string (see :func:`write_report`)."""
    out = Path(out_dir)
    record = _read_record(out)
    checked = _checked_sections(sections)
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
        f'<section class="wide extra" id="section-{i + 1}"><h2>{esc(t)}</h2>{h}</section>'
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
    return page(heading, f"geoseg land-cover run report · model {model.get('id', '?')}",
                record.get('run_id'), record.get('created'), body, record.get('geoseg_version', ''),
                source="run.json")


def write_report(out_dir: str | os.PathLike, *, sections: Sequence[tuple[str, str]] = (),
                 title: str | None = None, name: str = REPORT_NAME, overwrite: bool = True,
                 pending: Sequence[str] = ()) -> str:
    """Write ``out_dir/report.html`` for the ``geoseg predict`` run in ``out_dir``; returns its path.

    ``sections``: extra ``(title, html)`` blocks appended after the standard ones (e.g. a monitoring or
    change summary); ``title`` is escaped, ``html`` is inserted as given and must reference nothing
    external (:class:`~geoseg.errors.ParameterError` otherwise).  ``pending``: names of files written
    *after* the report (e.g. ``item.json``) that it should link to although they do not exist yet.
    ``overwrite=False`` refuses an existing report (:class:`~geoseg.errors.OutputExistsError`).
    Written atomically (:mod:`geoseg._util.atomic`).
    """
    target = Path(out_dir) / name
    if not overwrite and target.exists():
        raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")
    doc = render_report(out_dir, sections=sections, title=title, pending=pending)
    return atomic_write_text(target, doc)
