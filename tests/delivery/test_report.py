"""report.html (issue 6): a self-contained run report, checked as HTML and rendered in headless Chromium.

The browser tests need the Debian packages ``chromium`` and ``chromium-driver``
(``apt-get install -y --no-install-recommends chromium chromium-driver``); without a Chromium binary they
are skipped with a reason.  ``GEOSEG_CHROMIUM`` may name another Chromium/Chrome binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.delivery.report import REPORT_NAME, embed_png, external_references, html_table, render_report, write_report
from geoseg.delivery.stac import multihash_sha256
from geoseg.errors import InputError, InputFileError, OutputError, OutputExistsError, ParameterError
from geoseg.predict.api import predict_scene
from geoseg.testing import pattern_scene, write_raster


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, linear_model) -> Path:
    """A finished predict run (landcover, probabilities, confidence, quicklook, item.json)."""
    d = tmp_path_factory.mktemp("report")
    scene, _ = pattern_scene(240, 320)
    scene[:, :20, :30] = 0  # a nodata corner: the table gets a nodata row
    src = write_raster(d / "scene.tif", scene, descriptions=("B2", "B3", "B4", "B8"), nodata=0)
    predict_scene(src, linear_model, d / "out", probabilities=True, confidence=True, progress=False)
    return d / "out"


def record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def edit_record(out: Path, **changes) -> dict:
    rec = record(out)
    rec.update(changes)
    (out / "run.json").write_text(json.dumps(rec))
    return rec


class Tables(HTMLParser):
    """Text of every table cell, by table id and row class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.imgs: list[dict] = []
        self._table: list[str] = []
        self._row: tuple[str, list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table.append(a.get("id") or "")
            self.tables.setdefault(self._table[-1], [])
        elif tag == "tr" and self._table:
            self._row = (a.get("class") or "", [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table[-1]].append(self._row)
            self._row = None
        elif tag == "table" and self._table:
            self._table.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(doc: str) -> Tables:
    t = Tables()
    t.feed(doc)
    t.close()
    return t


def num(cell: str) -> float:
    return float(cell.replace("\u2009", "").replace(",", "").split()[0])


# --------------------------------------------------------------------------------------------- content

def test_report_content(out):
    path = write_report(out)
    assert path == str(out / REPORT_NAME)
    doc = Path(path).read_text(encoding="utf-8")
    rec = record(out)
    t = parse(doc)

    rows = [cells for cls, cells in t.tables["class-areas"] if cls == "class-row"]
    assert [r[1] for r in rows] == [c["name"] for c in rec["classes"]]
    area = rec["pixel_area_m2"]
    assert area == pytest.approx(100.0)
    total = sum(rec["class_pixels"].values())
    for r, c in zip(rows, rec["classes"]):
        n = rec["class_pixels"][c["name"]]
        assert int(r[0]) == c["value"]
        assert num(r[2]) == n
        assert num(r[3]) == pytest.approx(n * area / 1e4, abs=0.006)
        assert num(r[4]) == pytest.approx(100 * n / total, abs=0.06)
    assert sum(num(r[4]) for r in rows) == pytest.approx(100, abs=0.2)
    [tot] = [cells for cls, cells in t.tables["class-areas"] if cls == "total"]
    assert num(tot[2]) == total
    [nd] = [cells for cls, cells in t.tables["class-areas"] if cls == "nodata"]
    assert num(nd[2]) == rec["nodata_pixels"] == 600

    # the quicklook is embedded, byte for byte
    [img] = t.imgs
    assert img["src"].startswith("data:image/png;base64,")
    import base64

    assert base64.b64decode(img["src"].split(",", 1)[1]) == (out / "quicklook.png").read_bytes()

    # links to the outputs: relative, and only to files that exist
    links = [cells[0] for _, cells in t.tables["outputs"][1:]]
    for name in ("landcover.tif", "probabilities.tif", "confidence.tif", "landcover.qml", "quicklook.png",
                 "run.json", "item.json"):
        assert name in links
        assert f'href="{name}"' in doc
    for name in links:
        assert (out / name).is_file()

    # inputs and model card (the package still exists: card details are shown)
    kv = {cells[0]: cells[1] for _, cells in t.tables[""] if len(cells) == 2}
    assert kv["scene"] == rec["scene"]
    assert kv["id"] == "test-linear"
    assert kv["bands"] == "B2, B3, B4, B8"
    assert kv["tile / overlap"].startswith("64 / 16 px")
    assert kv["blend"] == "cosine"
    assert "EPSG:32633" in kv["CRS"]
    assert 'id="untrained"' in doc  # the linear test model is not marked trained
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".geoseg.lock"]  # no temporaries left


def test_self_contained_no_external_references(out):
    # URLs in plain text (the scene path, a class name) stay text: not references
    rec = record(out)
    rec["scene"] = "https://example.org/scenes/S2A.tif"
    rec["classes"][0]["name"] = "water (see http://example.org/legend)"
    rec["class_pixels"] = {c["name"]: v for c, v in zip(rec["classes"], rec["class_pixels"].values())}
    (out / "run.json").write_text(json.dumps(rec))
    doc = Path(write_report(out)).read_text(encoding="utf-8")
    assert "https://example.org/scenes/S2A.tif" in doc  # shown as text
    assert external_references(doc) == []
    # independent of the module's own parser: no URL-bearing attribute or CSS url() points off this folder
    attrs = re.findall(r"""\b(?:src|href|srcset|action|poster|data|background)\s*=\s*["']?\s*([^"'\s>]*)""", doc,
                       flags=re.I)
    assert attrs
    for v in attrs:
        assert v.startswith("data:") or not re.match(r"^([a-z][a-z0-9+.-]*:|//)", v, flags=re.I), v
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", doc, flags=re.I)
    assert not re.search(r"@import", doc, flags=re.I)
    assert "<script" not in doc.lower() and "<link" not in doc.lower() and "<iframe" not in doc.lower()
    assert "default-src 'none'" in doc  # CSP: the browser itself refuses anything external


def test_external_references_detects():
    assert external_references('<img src="https://x.org/a.png">') == ["<img src='https://x.org/a.png'>"]
    assert external_references('<a href="//cdn.example/x">x</a>')
    assert external_references('<div style="background:url(http://x/y.png)"></div>')
    assert external_references("<style>@import 'https://x/y.css';</style>")
    assert external_references('<a href="file:///etc/passwd">x</a>')
    assert external_references('<p>see https://x.org</p><a href="landcover.tif">l</a><a href="#m">m</a>'
                               '<img src="data:image/png;base64,AAAA">') == []


def test_text_is_escaped(out):
    rec = record(out)
    evil = '<script>alert("x")</script> & \'q\''
    rec["classes"][1]["name"] = evil
    rec["classes"][2]["color"] = 'red;background:url(http://x)'  # not #RRGGBB: replaced by grey
    rec["class_pixels"] = {c["name"]: v for c, v in zip(rec["classes"], rec["class_pixels"].values())}
    rec["scene"] = "/data/<b>scene</b>.tif"
    rec["run_id"] = '"><img src=x>'
    (out / "run.json").write_text(json.dumps(rec))
    doc = Path(write_report(out, title="A & B <i>")).read_text(encoding="utf-8")
    assert "<script>" not in doc and "<b>scene" not in doc and "<img src=x>" not in doc and "<i>" not in doc
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;" in doc
    assert "A &amp; B &lt;i&gt;" in doc
    assert "url(http" not in doc and "#888888" in doc
    rows = [cells for cls, cells in parse(doc).tables["class-areas"] if cls == "class-row"]
    assert rows[1][1] == evil  # the browser shows the name exactly


def test_sections(out, tmp_path):
    png = out / "quicklook.png"
    table = html_table(["alert", "area (ha)"], [["<a1>", 1.5], ["a2", 20]], numeric=[1], table_id="alerts")
    doc = Path(write_report(out, sections=[("Forest-loss alerts", table),
                                           ("Before / after", embed_png(png, "before", "before <2020>"))])
               ).read_text(encoding="utf-8")
    t = parse(doc)
    assert [c for _, c in t.tables["alerts"]] == [["alert", "area (ha)"], ["<a1>", "1.5"], ["a2", "20"]]
    assert "Forest-loss alerts" in doc and "before &lt;2020&gt;" in doc
    assert len(t.imgs) == 2 and external_references(doc) == []
    assert doc.index('id="outputs"') < doc.index("Forest-loss alerts")  # extra blocks come last
    with pytest.raises(ParameterError, match="external"):
        write_report(out, sections=[("x", '<img src="https://tiles.example/1.png">')])
    with pytest.raises(ParameterError, match="pair"):
        write_report(out, sections=["just html"])


def test_model_package_gone(out):
    edit_record(out, model={**record(out)["model"], "path": str(out / "no-such-model")})
    doc = render_report(out)
    assert "no longer exists" in doc
    kv = {c[0]: c[1] for _, c in parse(doc).tables[""] if len(c) == 2}
    assert kv["id"] == "test-linear" and "bands" not in kv


def test_without_quicklook_and_pixel_area(out):
    (out / "quicklook.png").unlink()
    edit_record(out, pixel_area_m2=None)
    doc = render_report(out, pending=["item.json", "report-extra.csv"])
    t = parse(doc)
    assert len(t.imgs) == 1 and t.imgs[0]["src"].startswith("data:image/png;base64,")  # rendered on the fly
    assert not (out / "quicklook.png").exists()
    rows = [c for cls, c in t.tables["class-areas"] if cls == "class-row"]
    assert all(r[3] == "—" for r in rows) and "hectares not given" in doc
    assert "quicklook.png" not in [c[0] for _, c in t.tables["outputs"][1:]]


def test_errors_and_atomic_write(out, tmp_path, monkeypatch):
    with pytest.raises(InputFileError, match="not a folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="run.json"):
        write_report(tmp_path / "empty")
    (tmp_path / "empty" / "run.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        write_report(tmp_path / "empty")

    first = Path(write_report(out)).read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_report(out, overwrite=False)

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    edit_record(out, run_id="changed")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError, match="No space left"):
        write_report(out)
    monkeypatch.undo()
    assert (out / REPORT_NAME).read_bytes() == first  # the old report is intact
    # and no temporary is left
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".geoseg.lock"]


def test_cli(out, tmp_path):
    runner = CliRunner()
    (out / REPORT_NAME).unlink(missing_ok=True)  # predict already wrote one
    r = runner.invoke(cli, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "report.html" in r.output and (out / REPORT_NAME).is_file()
    r = runner.invoke(cli, ["report", str(out)])
    assert r.exit_code == 5 and "--overwrite" in r.output
    r = runner.invoke(cli, ["report", str(out), "--overwrite", "--title", "Hong Kong 2016", "-q"])
    assert r.exit_code == 0 and r.output == ""
    assert "Hong Kong 2016" in (out / REPORT_NAME).read_text(encoding="utf-8")
    # item.json was refreshed: every checksum it records is still right
    item = json.loads((out / "item.json").read_text())
    for asset in item["assets"].values():
        assert multihash_sha256(out / asset["href"]) == asset["file:checksum"]
    r = runner.invoke(cli, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 3 and "not a folder" in r.output


# --------------------------------------------------------------------------------------- real browser

def chromium_binary() -> str | None:
    for name in (os.environ.get("GEOSEG_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def run_chromium(html: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    exe = chromium_binary()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y --no-install-recommends chromium "
                    "chromium-driver); the browser rendering test needs it")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--force-color-profile=srgb", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--window-size=1200,1600", *extra, html.resolve().as_uri()]
    env = {**os.environ, "HOME": str(profile)}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, f"chromium failed ({p.returncode}): {p.stderr[-2000:]}"
    return p


@pytest.fixture(scope="module")
def rendered(run_dir, tmp_path_factory):
    """report.html of the run rendered by headless Chromium: (screenshot PNG path, dumped DOM, run record)."""
    d = tmp_path_factory.mktemp("browser")
    out = d / "out"
    shutil.copytree(run_dir, out)
    page = Path(write_report(out))
    shot = d / "screenshot.png"
    run_chromium(page, d / "profile", f"--screenshot={shot}")
    assert shot.is_file(), "chromium wrote no screenshot"
    dom = run_chromium(page, d / "profile", "--dump-dom").stdout
    return shot, dom, record(out)


@pytest.mark.slow
def test_browser_screenshot(rendered):
    from PIL import Image

    shot, _, rec = rendered
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert img.shape == (1600, 1200, 3)
    # "ink": coloured or dark pixels (the page background #f3f4f6 and white cards do not count)
    ink = (img.max(axis=2) - img.min(axis=2) > 40) | (img.mean(axis=2) < 160)
    assert ink.mean() > 0.08, f"page looks blank: only {ink.mean():.1%} coloured or dark pixels"
    assert ink[:200].mean() > 0.01  # the header text rendered
    # the class colours: large areas of each (the embedded quicklook map, not just the 14-px swatches)
    for c in rec["classes"]:
        rgb = np.array([int(c["color"][i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
        n = int(np.all(np.abs(img - rgb) <= 3, axis=2).sum())
        assert rec["class_pixels"][c["name"]] > 0
        assert n > 2000, f"class {c['name']} ({c['color']}) covers only {n} screenshot pixels"
    # the colours are not just anywhere: the map is in the upper part of the page, above the tables
    upper = img[:1000]
    for c in rec["classes"]:
        rgb = np.array([int(c["color"][i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
        assert np.all(np.abs(upper - rgb) <= 3, axis=2).sum() > 2000


@pytest.mark.slow
def test_browser_dom(rendered):
    _, dom, rec = rendered
    t = parse(dom)
    rows = [c for cls, c in t.tables.get("class-areas", []) if cls == "class-row"]
    assert [r[1] for r in rows] == [c["name"] for c in rec["classes"]]
    assert [num(r[2]) for r in rows] == [rec["class_pixels"][c["name"]] for c in rec["classes"]]
    assert any(img.get("src", "").startswith("data:image/png;base64,") for img in t.imgs)
    for section in ('id="quicklook"', 'id="inputs"', 'id="model"', 'id="outputs"'):
        assert section in dom


# ------------------------------------------------------------------------- change and monitoring reports

@pytest.fixture(scope="module")
def change_dir(tmp_path_factory) -> Path:
    from geoseg.change.api import detect_change

    d = tmp_path_factory.mktemp("change")
    b = np.zeros((200, 240), np.uint8)
    b[:120] = 1
    a = b.copy()
    a[20:60, 20:100] = 0  # 3200 px of loss
    a[150:190, 150:230] = 1  # 3200 px of gain
    tags = {"CLASS_0": "water", "CLASS_1": "trees"}
    detect_change(write_raster(d / "b.tif", b, nodata=255, **tags), write_raster(d / "a.tif", a, nodata=255, **tags),
                  d / "out", min_area=0, progress=False)
    return d / "out"


def test_change_report_sections_and_errors(change_dir, tmp_path):
    from geoseg.delivery.report import change_sections, write_change_report

    doc = (change_dir / "report.html").read_text()
    t = parse(doc)
    rows = {r[0]: r for cls, r in t.tables["change-areas"] if cls == "change-row"}
    assert [num(rows[k][1]) for k in ("forest loss", "forest gain")] == [3200, 3200]
    assert rows["forest loss"][2] == "32.00" and rows["forest gain"][2] == "32.00"
    assert external_references(doc) == []
    # the sections also fit into a predict run's report
    secs = change_sections(change_dir)
    assert [s[0] for s in secs] == ["Forest change", "Change inputs", "Change outputs"]
    with pytest.raises(InputFileError, match="change.json does not exist"):
        write_change_report(tmp_path)


def test_monitor_report_needs_alerts(tmp_path):
    from geoseg.delivery.report import write_monitor_report

    with pytest.raises(InputFileError, match="alerts.gpkg does not exist"):
        write_monitor_report(tmp_path)


@pytest.mark.slow
def test_change_report_in_browser(change_dir, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    run_chromium(change_dir / "report.html", tmp_path / "profile", f"--screenshot={shot}")
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    for rgb in ((227, 26, 28), (51, 160, 44)):  # loss and gain of the embedded side-by-side quicklook
        n = int(np.all(np.abs(img - np.array(rgb)) <= 3, axis=2).sum())
        assert n > 500, f"colour {rgb} covers only {n} screenshot pixels"
    dom = run_chromium(change_dir / "report.html", tmp_path / "profile", "--dump-dom").stdout
    rows = [r for cls, r in parse(dom).tables.get("change-areas", []) if cls == "change-row"]
    assert [r[0] for r in rows] == ["no change", "forest loss", "forest gain"]
