"""The building blocks of geoseg's HTML reports: the page shell (one CSS, a Content-Security-Policy that
forbids any network access), escaped tables and key/value lists, embedded PNG figures, number formats, and
:func:`external_references`, the check that a document references nothing off its folder.

Every piece of text goes through :func:`esc` (:func:`html.escape`).
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPORT_NAME = "report.html"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")

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


def page(heading: str, subtitle: str, run_id: Any, created: Any, body: str, version: Any = "",
         source: str = "") -> str:
    """A whole report page: the shared CSS and Content-Security-Policy, a header (``heading``, ``subtitle``,
    run id and time), ``body`` and a footer naming the geoseg ``version`` and the ``source`` record."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="geoseg {esc(version)}">
<title>{esc(heading)} · geoseg report</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
<h1>{esc(heading)}<small>{esc(subtitle)}</small></h1>
<div class="runid">run <code>{esc(run_id or '?')}</code><br>{esc(created or '')}</div>
</header>
{body}
<footer>Written by geoseg {esc(version)}{" from " + esc(source) if source else ""} · self-contained: no network
access needed</footer>
</main>
</body>
</html>
"""


def fact_boxes(facts: Sequence[tuple[str, str]]) -> str:
    """The row of key figures at the top of a report: ``(label, value)`` pairs."""
    return '<div class="facts">' + "".join(f'<div class="fact"><span>{esc(k)}</span><b>{esc(v)}</b></div>'
                                           for k, v in facts) + "</div>"


def file_links(folder: Path, files: Sequence[tuple[str, str]], table_id: str, pending: Sequence[str] = ()) -> str:
    """A table of links to the ``files`` present in ``folder``, plus those in ``pending`` (written after the
    report, e.g. ``item.json``; size shown as —)."""
    rows = [f'<tr><td><a href="{esc(quote(n))}">{esc(n)}</a></td><td>{esc(what)}</td>'
            f"<td class=n>{esc(fmt_size((folder / n).stat().st_size) if (folder / n).is_file() else '—')}</td></tr>"
            for n, what in files if (folder / n).is_file() or n in pending]
    return (f'<table id="{esc(table_id)}"><thead><tr><th>file</th><th>content</th><th class=n>size</th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table>")


def sections_html(sections: Sequence[tuple[str, str]]) -> str:
    """``(title, html)`` blocks as full-width ``<section>`` elements (id: the title in lower case)."""
    return "".join(f'<section class="wide" id="{esc(t.lower().replace(" ", "-"))}"><h2>{esc(t)}</h2>{h}</section>'
                   for t, h in sections)


def esc(value: Any) -> str:
    """Escape anything as HTML text (quotes included, so it is also safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = (),
               table_id: str | None = None, css_class: str | None = None) -> str:
    """An HTML table whose cells are escaped text; columns in ``numeric`` are right-aligned."""
    num = set(numeric)
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (f' class="{esc(css_class)}"' if css_class else "")
    head = "".join(f'<th{" class=n" if i in num else ""}>{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if i in num else ""}>{esc(v)}</td>' for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def embed_png(path: str | os.PathLike, alt: str = "", caption: str | None = None) -> str:
    """A ``<figure>`` with the PNG at ``path`` embedded as a base64 ``data:`` URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


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


def fmt_int(n: Any) -> str:
    try:
        return f"{int(n):,}".replace(",", "\u2009")  # thin space: unambiguous in any locale
    except (TypeError, ValueError):
        return "—"


def fmt_num(x: float | None, digits: int = 2) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:,.{digits}f}".replace(",", "\u2009")


def fmt_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def safe_colour(c: Any) -> str:
    return c if isinstance(c, str) and _HEX.match(c) else "#888888"


def kv_table(rows: Iterable[tuple[str, Any]], *, code: Sequence[str] = ()) -> str:
    out = []
    for k, v in rows:
        if v is None or v == "":
            continue
        cell = f'<span class="path">{esc(v)}</span>' if k in code else esc(v)
        out.append(f"<tr><th>{esc(k)}</th><td>{cell}</td></tr>")
    return '<table class="kv">' + "".join(out) + "</table>"


def as_count(v: Any) -> int:
    """``v`` as a pixel count (0 when missing or not a number)."""
    try:
        return max(0, int(v))
    except (TypeError, ValueError):
        return 0


def now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
