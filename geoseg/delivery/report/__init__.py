"""``report.html``: self-contained HTML pages describing a ``geoseg predict`` run, a ``geoseg change``
folder and a monitoring run (per AOI and a run-level index).

Self-contained: one file, inline CSS, no JavaScript, images embedded, no reference to anything on a
network (a Content-Security-Policy ``<meta>`` makes the browser refuse any that slipped in).  Every piece
of text is escaped with :func:`html.escape`.  Extra blocks (e.g. a monitoring/change summary) are passed
as ``sections``: ``(title, html)`` pairs; their HTML is the caller's and is checked to reference nothing
external (build it with :func:`html_table` / :func:`embed_png`, which escape and embed).

No torch, no dask.  Written atomically (:mod:`geoseg._util.atomic`).

The rooms: :mod:`.page` (page shell, CSS, tables, figures, the external-reference check), :mod:`.run`
(the predict run report), :mod:`.change` (the change report), :mod:`.monitor` (monitoring reports and index).
"""

from __future__ import annotations

from geoseg.delivery.report.change import change_sections, write_change_report
from geoseg.delivery.report.monitor import (
    MAX_ALERT_ROWS,
    confidence_totals,
    monitor_index_html,
    monitor_sections,
    write_monitor_index,
    write_monitor_report,
)
from geoseg.delivery.report.page import REPORT_NAME, embed_png, external_references, html_table
from geoseg.delivery.report.run import render_report, write_report

__all__ = ["write_report", "render_report", "write_change_report", "change_sections", "write_monitor_report",
           "monitor_sections", "write_monitor_index", "monitor_index_html", "confidence_totals", "html_table",
           "embed_png", "external_references", "REPORT_NAME", "MAX_ALERT_ROWS"]
