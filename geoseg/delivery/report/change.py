"""``report.html`` of a ``geoseg change`` folder, built from ``change.json``: loss/gain areas, the
before/after/change quicklook, the inputs and links to the outputs.  :func:`change_sections` gives the same
blocks for another report (``write_report(sections=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg._util.atomic import atomic_write_text
from geoseg.delivery.report.page import (
    REPORT_NAME,
    as_count,
    embed_png,
    esc,
    fact_boxes,
    file_links,
    fmt_int,
    fmt_num,
    kv_table,
    page,
    sections_html,
)
from geoseg.delivery.stac import read_record
from geoseg.io.codes import CHANGE_CLASSES

_CHANGE_FILES = [("change.tif", "forest change (COG): 0 no change, 1 loss, 2 gain, 255 unobserved"),
                 ("change.qml", "QGIS style of change.tif"),
                 ("loss.gpkg", "forest-loss polygons (GeoPackage, styled)"),
                 ("change_quicklook.png", "before / after / change quicklook"),
                 ("change.json", "change record (inputs, pixel counts, areas)"),
                 ("item.json", "STAC Item (catalogue metadata with checksums)")]

#: (key of change.json's ``pixels``, label, colour) of each observed change class, from the change code table.
_CHANGE_ROWS = [(name, name.replace("_", " "), "#{:02X}{:02X}{:02X}".format(*rgba[:3]))
                for name, rgba in CHANGE_CLASSES.values()]


def _change_record(out: Path) -> dict[str, Any]:
    return read_record(out / "change.json", f"run geoseg change into {out} first")


def _pixel_area(rec: dict[str, Any]) -> float | None:
    area = rec.get("pixel_area_m2")
    return float(area) if isinstance(area, (int, float)) and area > 0 else None


def _area_table(rec: dict[str, Any]) -> tuple[str, int, int]:
    """The change-areas table, the observed and the unobserved pixel counts."""
    px = rec.get("pixels") or {}
    area = _pixel_area(rec)
    observed = sum(as_count(px.get(k)) for k, _, _ in _CHANGE_ROWS)
    rows = []
    for key, label, colour in _CHANGE_ROWS:
        n = as_count(px.get(key))
        ha = n * area / 1e4 if area else None
        share = 100.0 * n / observed if observed else 0.0
        rows.append(f'<tr class="change-row" data-class="{esc(key)}"><td class="name"><span class="sw" '
                    f'style="background:{colour}"></span>{esc(label)}</td><td class=n>{fmt_int(n)}</td>'
                    f"<td class=n>{fmt_num(ha)}</td><td class=n>{share:.2f} %</td></tr>")
    n_un = as_count(px.get("unobserved"))
    rows.append(f'<tr class="nodata"><td>unobserved (nodata or masked in either date)</td>'
                f"<td class=n>{fmt_int(n_un)}</td><td class=n>{fmt_num(n_un * area / 1e4 if area else None)}</td>"
                "<td class=n>—</td></tr>")
    table = ('<table id="change-areas"><thead><tr><th>change</th><th class=n>pixels</th><th class=n>hectares</th>'
             '<th class=n>share of observed</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return table, observed, n_un


def _inputs_html(rec: dict[str, Any]) -> str:
    forest = rec.get("forest") or {}
    fdef = (f">= {forest.get('threshold_percent'):g} % forest probability" if rec.get("mode") == "probability"
            and isinstance(forest.get("threshold_percent"), (int, float))
            else f"classes {', '.join(map(str, forest.get('items') or []))}")
    area = _pixel_area(rec)
    return kv_table([("before", rec.get("before")), ("after", rec.get("after")),
                     ("before mask", rec.get("before_mask")), ("after mask", rec.get("after_mask")),
                     ("mode", rec.get("mode")), ("forest", fdef), ("aligned", "yes" if rec.get("aligned") else "no"),
                     ("dropped patches (under the MMU)", fmt_int(rec.get("dropped_polygons"))),
                     ("pixel area", f"{fmt_num(area, 1)} m²" if area else None)],
                    code=("before", "after", "before mask", "after mask"))


def change_sections(change_dir: str | os.PathLike, pending: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(title, html)`` blocks of a ``geoseg change`` folder (from ``change.json``): loss/gain areas,
    the before/after/change quicklook, inputs and outputs (``pending``: files written after the report that
    it should link to).  Usable as ``write_report(sections=...)``."""
    out = Path(change_dir)
    rec = _change_record(out)
    table, observed, n_un = _area_table(rec)
    facts = fact_boxes([
        ("forest loss", f"{fmt_num(rec.get('loss_ha'))} ha"), ("forest gain", f"{fmt_num(rec.get('gain_ha'))} ha"),
        ("loss polygons", f"{fmt_int(rec.get('loss_polygons'))} ({fmt_num(rec.get('loss_polygon_ha'))} ha)"),
        ("min. mapping unit", f"{fmt_num(rec.get('min_area_ha'))} ha"),
        ("observed", f"{100 * observed / max(1, observed + n_un):.1f} %"),
        ("run time", f"{rec['seconds']:.1f} s" if isinstance(rec.get("seconds"), (int, float)) else "—"),
    ])
    ql = out / "change_quicklook.png"
    figure = (embed_png(ql, alt="before, after and change quicklook",
                        caption="before / after (forest, non-forest, no data) and the change map")
              if ql.is_file() else '<p class="muted">No change_quicklook.png in this folder.</p>')
    return [("Forest change", facts + figure + table),
            ("Change inputs", _inputs_html(rec)),
            ("Change outputs", file_links(out, _CHANGE_FILES, "change-outputs", pending))]


def write_change_report(change_dir: str | os.PathLike, *, title: str | None = None,
                        name: str = REPORT_NAME, pending: Sequence[str] = ()) -> str:
    """Write ``report.html`` in a ``geoseg change`` folder: loss/gain areas, the side-by-side quicklook,
    inputs and output links (self-contained, atomic); ``pending``: files written after it (``item.json``)
    to link to.  Returns its path."""
    out = Path(change_dir)
    rec = _change_record(out)
    body = sections_html(change_sections(out, pending))
    heading = title or f"Forest change: {Path(rec.get('before') or 'before').name} → " \
                       f"{Path(rec.get('after') or 'after').name}"
    doc = page(heading, "geoseg change report", rec.get("run_id"), rec.get("created"), body,
               rec.get("geoseg_version", ""))
    return atomic_write_text(out / name, doc)
