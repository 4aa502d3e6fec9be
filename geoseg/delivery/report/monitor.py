"""The HTML reports of ``geoseg monitor run``: one per AOI folder (``OUT/<aoi_id>/report.html``, from its
``alerts.gpkg``: area by confidence, the alert list, the scenes applied, links to the outputs) and the
run-level index (``OUT/report.html``: one row per AOI).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from geoseg._util.atomic import atomic_write_text
from geoseg._version import __version__
from geoseg.delivery.report.page import (
    REPORT_NAME,
    esc,
    fact_boxes,
    file_links,
    fmt_int,
    fmt_num,
    html_table,
    now,
    page,
    sections_html,
)
from geoseg.delivery.style import ALERT_CATEGORIES
from geoseg.errors import InputFileError

#: at most this many alerts are listed in a monitoring report (the GeoPackage has them all)
MAX_ALERT_ROWS = 500
#: confidence -> colour, in the order the reports list them (the alert layer's style)
_CONFIDENCE_COLOURS = {str(c.value): c.color for c in ALERT_CATEGORIES}


def _alert_tables(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
    out: dict[str, tuple[int, float, int]] = {}
    for conf in _CONFIDENCE_COLOURS:
        sel = [a for a in active if a.get("confidence") == conf]
        out[conf] = (len(sel), sum(float(a["area_ha"]) for a in sel), sum(int(a["n_pixels"]) for a in sel))
    return out


def _swatch(conf: str) -> str:
    return f'<span class="sw" style="background:{_CONFIDENCE_COLOURS[conf]}"></span>{esc(conf)}'


def monitor_sections(aoi_folder: str | os.PathLike, pending: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(title, html)`` blocks of one monitoring AOI folder (``alerts.gpkg``): area by confidence, the
    alert list (newest first, at most :data:`MAX_ALERT_ROWS`), the per-scene summary and the output links
    (``pending``: files written after the report, e.g. ``item.json``)."""
    folder = Path(aoi_folder)
    alerts, summary = _alert_tables(folder)
    return [("Area by confidence", _confidence_table(alerts)), ("Alerts", _alert_list(alerts)),
            ("Scenes applied", _scene_table(summary)),
            ("Monitoring outputs", file_links(folder, _output_files(folder), "monitor-outputs", pending))]


def _confidence_table(alerts: list[dict[str, Any]]) -> str:
    by_conf = [f'<tr class="conf-row" data-confidence="{conf}"><td class="name">{_swatch(conf)}</td>'
               f"<td class=n>{n}</td><td class=n>{fmt_num(ha, 4)}</td><td class=n>{fmt_int(px)}</td></tr>"
               for conf, (n, ha, px) in confidence_totals(alerts).items()]
    n_sup = sum(a.get("status") == "superseded" for a in alerts)
    return ('<table id="area-by-confidence"><thead><tr><th>confidence</th><th class=n>alerts</th>'
            '<th class=n>hectares</th><th class=n>pixels</th></tr></thead><tbody>' + "".join(by_conf)
            + "</tbody></table>"
            + f'<p class="muted">Current alerts; {n_sup} superseded alert(s) are listed below but not '
            "counted.</p>")


def _alert_list(alerts: list[dict[str, Any]]) -> str:
    """The alerts, newest first, at most :data:`MAX_ALERT_ROWS`."""
    ordered = sorted(alerts, key=lambda a: (str(a.get("first_detected")), str(a.get("alert_id"))), reverse=True)
    shown = ordered[:MAX_ALERT_ROWS]
    table = html_table(
        ["alert", "confidence", "status", "first detected", "last detected", "ha", "pixels", "updated"],
        [[a.get("alert_id"), a.get("confidence"), a.get("status"), a.get("first_detected"),
          a.get("last_detected"), fmt_num(float(a.get("area_ha") or 0), 4), fmt_int(a.get("n_pixels")),
          a.get("updated_at")] for a in shown], numeric=[5, 6], table_id="alert-list")
    if len(ordered) > len(shown):
        table += (f'<p class="muted">{len(ordered) - len(shown)} older alert(s) not listed; '
                  "alerts.gpkg has them all.</p>")
    return table


def _scene_table(summary: list[dict[str, Any]]) -> str:
    return html_table(
        ["date", "scene", "observed", "low", "high", "rejected", "low ha", "high ha", "late"],
        [[r.get("date"), r.get("scene_id"), f"{100 * float(r.get('observed_fraction') or 0):.1f} %",
          r.get("alerts_low"), r.get("alerts_high"), r.get("alerts_rejected"),
          fmt_num(float(r.get("area_low_ha") or 0), 4), fmt_num(float(r.get("area_high_ha") or 0), 4),
          "yes" if r.get("late") else ""] for r in summary], numeric=[2, 3, 4, 5, 6, 7], table_id="scene-summary")


def _output_files(folder: Path) -> list[tuple[str, str]]:
    files = [("alerts.gpkg", "alerts (layer alerts, styled by confidence) and per-scene summary"),
             ("alerts_gfw.tif", "GFW date-confidence raster (COG)"), ("alerts_gfw.qml", "QGIS style of alerts_gfw.tif")]
    files += [(p.name, "alerts new or changed by a run (GeoJSON, WGS84)")
              for p in sorted(folder.glob("changes_since_*.geojson"))]
    files.append(("item.json", "STAC Item (catalogue metadata with checksums)"))
    return files


def write_monitor_report(aoi_folder: str | os.PathLike, *, aoi_id: str | None = None, run_id: str | None = None,
                         title: str | None = None, name: str = REPORT_NAME, pending: Sequence[str] = ()) -> str:
    """Write ``report.html`` in a monitoring AOI folder (``OUT/<aoi_id>/``): area by confidence, the alert
    list and the scenes applied (self-contained, atomic); ``pending``: files written after it to link to.
    Returns its path."""
    folder = Path(aoi_folder)
    aoi = aoi_id or folder.name
    body = sections_html(monitor_sections(folder, pending))
    doc = page(title or f"Forest-loss alerts: {aoi}", "geoseg monitoring report", run_id, now(), body,
               __version__)
    return atomic_write_text(folder / name, doc)


# -- the run-level index ---------------------------------------------------------------------------------

def _aoi_index_row(out: Path, aoi: str) -> tuple[str, dict[str, tuple[int, float, int]] | None]:
    """One ``<tr>`` of the monitoring index and the AOI's totals by confidence (None: no outputs yet)."""
    folder = out / aoi
    link = f'<a href="{esc(quote(aoi))}/{REPORT_NAME}">{esc(aoi)}</a>' if (folder / REPORT_NAME).is_file() \
        else esc(aoi)
    if not (folder / "alerts.gpkg").is_file():
        return (f'<tr class="aoi-row" data-aoi="{esc(aoi)}"><td class="name">{link}</td>'
                '<td colspan="8" class="muted">no outputs yet (no scene applied)</td></tr>'), None
    alerts, summary = _alert_tables(folder)
    totals = confidence_totals(alerts)
    cells = "".join(f"<td class=n>{n}</td><td class=n>{fmt_num(ha, 4)}</td>" for n, ha, _ in totals.values())
    dates = sorted(str(r.get("date")) for r in summary)
    item = (f' · <a href="{esc(quote(aoi))}/item.json">item.json</a>' if (folder / "item.json").is_file() else "")
    return (f'<tr class="aoi-row" data-aoi="{esc(aoi)}"><td class="name">{link}{item}</td>{cells}'
            f"<td class=n>{len(summary)}</td><td>{esc(dates[-1] if dates else '—')}</td></tr>"), totals


def monitor_index_html(out_dir: str | os.PathLike, aoi_ids: Sequence[str], *, run_id: str | None = None,
                       title: str | None = None) -> str:
    """The run-level monitoring index (``OUT/report.html``) as HTML: one row per AOI with its current
    alerts and hectares by confidence, the scenes applied and links to the AOI's report and STAC Item."""
    out = Path(out_dir)
    rows: list[str] = []
    sums: dict[str, list[float]] = {c: [0, 0.0] for c in _CONFIDENCE_COLOURS}
    for aoi in aoi_ids:
        row, totals = _aoi_index_row(out, aoi)
        rows.append(row)
        for conf, (n, ha, _) in (totals or {}).items():
            sums[conf][0] += n
            sums[conf][1] += ha
    head = "".join(f'<th class=n>{_swatch(c)}</th><th class=n>{esc(c)} ha</th>' for c in _CONFIDENCE_COLOURS)
    total = "".join(f"<td class=n>{n}</td><td class=n>{fmt_num(ha, 4)}</td>" for n, ha in sums.values())
    table = (f'<table id="aoi-index"><thead><tr><th>AOI</th>{head}<th class=n>scenes</th><th>last scene</th></tr>'
             "</thead><tbody>" + "".join(rows) + "</tbody>"
             f'<tfoot><tr class="total"><td>all AOIs</td>{total}<td></td><td></td></tr></tfoot></table>'
             '<p class="muted">Current alerts (superseded ones are not counted). Alerts: number of alert polygons; '
             "ha: their area. Links are relative: keep this page in the monitoring output folder.</p>")
    facts = fact_boxes([("areas of interest", str(len(aoi_ids))), ("high alerts", str(sums["high"][0])),
                        ("low alerts", str(sums["low"][0])),
                        ("alert area", f"{fmt_num(sums['high'][1] + sums['low'][1], 2)} ha")])
    cat = ('<p><a href="catalog.json">catalog.json</a>: STAC Catalog linking every AOI\'s item.json</p>'
           if (out / "catalog.json").is_file() else "")
    body = facts + sections_html([("Areas of interest", table + cat)])
    return page(title or "Forest-loss monitoring", "geoseg monitoring index", run_id, now(), body, __version__)


def write_monitor_index(out_dir: str | os.PathLike, aoi_ids: Sequence[str], *, run_id: str | None = None,
                        title: str | None = None, name: str = REPORT_NAME) -> str:
    """Write ``OUT/report.html`` of a monitoring output folder (see :func:`monitor_index_html`), atomically;
    returns its path."""
    return atomic_write_text(Path(out_dir) / name, monitor_index_html(out_dir, aoi_ids, run_id=run_id, title=title))
