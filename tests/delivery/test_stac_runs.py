"""STAC Items of ``geoseg change`` and ``geoseg monitor run`` folders, the monitoring catalog and index page.

Every item is validated offline against the bundled schemas (tests/data/stac, via stac_schemas.validate_item);
checksums, classes, dates and footprints are checked against the files themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import yaml
from pyproj import Transformer
from shapely.geometry import Point, shape
from stac_schemas import stac_errors, validate_item

from geoseg.change.api import CHANGE_CLASSES, OUTPUT_NAMES, detect_change
from geoseg.delivery.report import external_references
from geoseg.delivery.stac import EXTENSIONS, change_item
from geoseg.errors import OutputExistsError
from geoseg.monitoring.api import run_monitor
from geoseg.testing import BANDS4, ORIGIN, RES, write_raster

TAGS = {"CLASS_0": "water", "CLASS_1": "trees", "CLASS_2": "built"}


# -- helpers ---------------------------------------------------------------------------------------------


def assert_checksums(folder: Path, item: dict) -> None:
    """Every asset's file exists beside the item, with the recorded size and multihash SHA2-256."""
    for key, a in item["assets"].items():
        f = folder / a["href"]
        assert f.is_file(), key
        assert a["file:size"] == f.stat().st_size, key
        assert a["file:checksum"] == "1220" + hashlib.sha256(f.read_bytes()).hexdigest(), key


def assert_footprint(item: dict, raster: Path, n: int = 101) -> None:
    """The item geometry (WGS84) covers the raster's outline, sampled with pyproj (not geoseg's code path)."""
    with rasterio.open(raster) as src:
        t, w, h, crs = src.transform, src.width, src.height, src.crs
    edge = np.linspace(0.0, 1.0, n)
    cols = np.concatenate([edge * w, np.full(n, w), edge[::-1] * w, np.zeros(n)])
    rows = np.concatenate([np.zeros(n), edge * h, np.full(n, h), edge[::-1] * h])
    xs, ys = t @ (cols, rows)
    lon, lat = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True).transform(xs, ys)
    poly = shape(item["geometry"]).buffer(1e-6)  # ~0.1 m: coordinates are rounded to 1e-7 degrees
    assert all(poly.covers(Point(x, y)) for x, y in zip(lon, lat))
    w_, s_, e_, n_ = item["bbox"]
    assert w_ <= min(lon) + 1e-6 and s_ <= min(lat) + 1e-6 and e_ >= max(lon) - 1e-6 and n_ >= max(lat) - 1e-6
    assert item["properties"]["proj:shape"] == [h, w]
    assert item["properties"]["proj:transform"] == list(t)[:6]


class Tables(HTMLParser):
    """Rows of cell texts (and the links in them) per table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str | None, list[list[str]]] = {}
        self.links: dict[str | None, list[list[str]]] = {}
        self.cur = self.row = self.cell = self.row_links = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.cur = a.get("id")
            self.tables[self.cur], self.links[self.cur] = [], []
        elif tag == "tr":
            self.row, self.row_links = [], []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""
        elif tag == "a" and self.row_links is not None:
            self.row_links.append(a.get("href"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(" ".join(self.cell.split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[self.cur].append(self.row)
            self.links[self.cur].append(self.row_links)
            self.row = self.row_links = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


# -- geoseg change ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def change_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("change")
    b = np.zeros((300, 280), np.uint8)
    b[:150] = 1
    a = b.copy()
    a[10:20, 10:30] = 2  # loss
    a[250:270, 250:270] = 1  # gain
    a[60:62] = 255  # unobserved
    write_raster(d / "before.tif", b, nodata=255, **TAGS)
    write_raster(d / "after.tif", a, nodata=255, **TAGS)
    detect_change(d / "before.tif", d / "after.tif", d / "out", min_area=0)
    return d / "out"


def test_change_item_validates_lists_every_file_with_checksums(change_dir):
    item = json.loads((change_dir / "item.json").read_text())
    validate_item(item)
    assert set(item["stac_extensions"]) == set(EXTENSIONS.values())
    rec = json.loads((change_dir / "change.json").read_text())
    assert item["id"] == f"geoseg-change-{rec['run_id']}"
    assert item["properties"]["datetime"] == rec["created"]
    assert item["properties"]["geoseg:before"] == rec["before"] and item["properties"]["geoseg:after"] == rec["after"]
    assert item["properties"]["proj:code"] == "EPSG:32633"
    # every other file of the folder is an asset, with its checksum (so item.json was written last)
    assert sorted(a["href"][2:] for a in item["assets"].values()) == sorted(set(OUTPUT_NAMES) - {"item.json"})
    assert sorted(os.listdir(change_dir)) == sorted(OUTPUT_NAMES)
    assert_checksums(change_dir, item)
    assert_footprint(item, change_dir / "change.tif")
    assert item["assets"]["quicklook"]["roles"] == ["overview", "thumbnail"]
    assert item["assets"]["loss"]["type"] == "application/geopackage+sqlite3"
    # the report links the item although it was written after it
    assert '<a href="item.json">' in (change_dir / "report.html").read_text()


def test_change_item_classes_match_the_raster(change_dir):
    item = json.loads((change_dir / "item.json").read_text())
    asset = item["assets"]["change"]
    with rasterio.open(change_dir / "change.tif") as src:
        tags, nodata, dtype, cmap = src.tags(1), src.nodata, src.dtypes[0], src.colormap(1)
        values = set(np.unique(src.read(1)).tolist())
    assert asset["raster:bands"] == [{"data_type": dtype, "sampling": "area", "nodata": int(nodata),
                                      "spatial_resolution": RES}]
    classes = {c["value"]: c for c in asset["classification:classes"]}
    assert values <= set(classes)  # every value in the raster is described
    for v, (name, rgba) in CHANGE_CLASSES.items():
        assert classes[v]["name"] == name == tags[f"CLASS_{v}"]
        assert classes[v]["color_hint"] == "{:02X}{:02X}{:02X}".format(*cmap[v][:3]) == \
            "{:02X}{:02X}{:02X}".format(*rgba[:3])
        assert "nodata" not in classes[v]
    assert classes[int(nodata)]["nodata"] is True and classes[int(nodata)]["name"] == "unobserved"


def test_change_item_is_governed_by_overwrite(change_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "item.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="item.json"):
        detect_change(change_dir.parent / "before.tif", change_dir.parent / "after.tif", out)
    detect_change(change_dir.parent / "before.tif", change_dir.parent / "after.tif", out, overwrite=True)
    item = json.loads((out / "item.json").read_text())
    assert item == change_item(out)  # rewritten from the new files (same inputs, new run id)
    assert_checksums(out, item)


def test_bundled_schemas_enforce_published_constraints(change_dir):
    """Each constraint added after comparing with the published extension schemas rejects a broken item,
    and the ones ours had on top of the published schemas are gone."""
    item = change_item(change_dir)
    assert stac_errors(item) == []

    def broken(mutate) -> str:
        bad = json.loads(json.dumps(item))
        mutate(bad)
        return "\n".join(stac_errors(bad))

    change, loss = "change", "loss"
    assert "raster-v1.1.0.json" in broken(lambda i: i["assets"][change].update({"raster:foo": 1}))
    assert "raster-v1.1.0.json" in broken(lambda i: i["assets"][change]["raster:bands"].append({}))
    assert "raster-v1.1.0.json" in broken(lambda i: i["assets"][change]["raster:bands"][0].update(
        {"histogram": {"count": 2, "min": 0, "max": 1, "buckets": [1, 2]}}))
    assert "raster-v1.1.0.json" in broken(lambda i: i["assets"][change]["raster:bands"][0].update(
        {"statistics": {"median": 1}}))
    assert "file-v2.1.0.json" in broken(lambda i: i["assets"][loss].update({"file:bogus": 1}))
    assert "file-v2.1.0.json" in broken(lambda i: i["assets"][loss].update({"file:local_path": "-a/b"}))
    assert "file-v2.1.0.json" in broken(lambda i: i["assets"][loss].update(
        {"file:values": [{"values": [0], "summary": ""}]}))
    assert "classification-v2.0.0.json" in broken(lambda i: i["assets"][change].update({"classification:foo": 1}))
    assert "classification-v2.0.0.json" in broken(lambda i: i["assets"][change]["classification:classes"].append(
        dict(i["assets"][change]["classification:classes"][0])))  # duplicate class
    assert "classification-v2.0.0.json" in broken(lambda i: i["assets"][change]["raster:bands"][0].update(
        {"classification:foo": 1}))
    assert "classification-v2.0.0.json" in broken(lambda i: i["assets"][change].update(
        {"classification:bitfields": [{"offset": -1, "length": 1, "classes": [{"value": 0, "name": "a"}]}]}))
    # stricter than published before: no proj field at all, raster:bands in properties, an empty description
    assert broken(lambda i: [i["properties"].pop(k) for k in list(i["properties"]) if k.startswith("proj:")]) == ""
    assert broken(lambda i: i["properties"].update({"raster:bands": [{"data_type": "uint8"}]})) == ""
    assert broken(lambda i: i["assets"][change]["classification:classes"][0].update({"description": ""})) == ""


# -- geoseg monitor --------------------------------------------------------------------------------------


H = W = 40
LOST = {(10, 20, 10, 20): {"20210201", "20210301"}, (25, 30, 25, 30): {"20210301"}}


def _scene(folder: Path, date: str) -> Path:
    a = np.ones((H, W), np.uint8)
    a[:5] = 0
    for (r0, r1, c0, c1), dates in LOST.items():
        if date in dates:
            a[r0:r1, c0:c1] = 0
    return write_raster(folder / f"S2_{date}_landcover.tif", a, nodata=255, CLASS_0="grass", CLASS_1="trees")


def _monitor_project(tmp: Path, dates: list[str]) -> Path:
    """Three AOIs: aoi1 (both patches), aoi2 (a window without loss), far (outside every scene)."""
    import geopandas as gpd
    from shapely.geometry import box

    (tmp / "scenes").mkdir(parents=True, exist_ok=True)
    for d in dates:
        _scene(tmp / "scenes", d)
    x0, y1 = ORIGIN
    gpd.GeoDataFrame({"id": ["aoi1", "aoi2", "far"]},
                     geometry=[box(x0 + 2 * RES, y1 - 38 * RES, x0 + 38 * RES, y1 - 2 * RES),
                               box(x0 + 30 * RES, y1 - 10 * RES, x0 + 38 * RES, y1 - 2 * RES),
                               box(x0 + 90_000, y1 - 1000, x0 + 91_000, y1)],
                     crs="EPSG:32633").to_file(tmp / "aois.gpkg", engine="pyogrio")
    cfg = {"aois": "aois.gpkg", "scenes": {"glob": "scenes/*.tif"}, "forest": "trees", "output": "out"}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "monitor.yaml"


def _totals(gpkg: Path) -> dict[str, tuple[int, float]]:
    """Current alerts and hectares by confidence, read straight from the GeoPackage."""
    df = pyogrio.read_dataframe(gpkg, layer="alerts", read_geometry=False)
    df = df[df["status"] != "superseded"]
    return {c: (int((df["confidence"] == c).sum()), float(df.loc[df["confidence"] == c, "area_ha"].sum()))
            for c in ("high", "low", "rejected")}


def test_monitor_item_per_aoi_validates_and_is_rewritten(tmp_path):
    cfg = _monitor_project(tmp_path, ["20210101", "20210201"])
    run_monitor(cfg)
    aoi = tmp_path / "out" / "aoi1"
    item = json.loads((aoi / "item.json").read_text())
    validate_item(item)
    assert item["id"] == "geoseg-monitor-aoi1" and item["properties"]["geoseg:aoi_id"] == "aoi1"
    props = item["properties"]
    assert props["datetime"] is None
    assert (props["start_datetime"], props["end_datetime"]) == ("2021-01-01T00:00:00Z", "2021-02-01T00:00:00Z")
    assert set(item["assets"]) == {"alerts_gfw", "alerts", "alerts_gfw-style", "report", "changes-since-start"}
    assert_checksums(aoi, item)
    assert_footprint(item, aoi / "alerts_gfw.tif")
    gfw = item["assets"]["alerts_gfw"]
    with rasterio.open(aoi / "alerts_gfw.tif") as src:
        assert gfw["raster:bands"] == [{"data_type": src.dtypes[0], "sampling": "area", "nodata": int(src.nodata),
                                        "spatial_resolution": RES}]
        values = np.unique(src.read(1))
    # the date-confidence encoding is described, not given as (invalid) classes
    assert "classification:classes" not in gfw and "3xxxx" in gfw["description"] and "2xxxx" in gfw["description"]
    assert {int(v) // 10000 for v in values if v} == {2}  # one loss observation so far: low confidence only
    assert {(lk["rel"], lk["href"]) for lk in item["links"]} == {("root", "../catalog.json"),
                                                                 ("parent", "../catalog.json")}
    catalog = json.loads((tmp_path / "out" / "catalog.json").read_text())
    assert catalog["type"] == "Catalog" and catalog["stac_version"] == "1.1.0"
    assert [lk["href"] for lk in catalog["links"] if lk["rel"] == "item"] == ["./aoi1/item.json", "./aoi2/item.json"]
    assert '<a href="item.json">' in (aoi / "report.html").read_text()

    _scene(tmp_path / "scenes", "20210301")  # confirms patch A: new alerts, rewritten files
    run_monitor(cfg)
    item2 = json.loads((aoi / "item.json").read_text())
    validate_item(item2)
    assert item2["properties"]["end_datetime"] == "2021-03-01T00:00:00Z"
    assert item2["assets"]["alerts"]["file:checksum"] != item["assets"]["alerts"]["file:checksum"]
    assert "changes-since-20210201" in item2["assets"]
    assert_checksums(aoi, item2)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["outputs:2", "changes:1"])
def test_monitor_item_after_a_crash_matches_the_files(tmp_path, step):
    import subprocess
    import sys

    cfg = _monitor_project(tmp_path, ["20210101", "20210201", "20210301"])
    env = {**os.environ, "GEOSEG_MONITOR_CRASH_AFTER": step}
    cmd = [sys.executable, "-c", "from geoseg.cli import main; main()", "monitor", "run", str(cfg), "-q"]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 86
    assert not (tmp_path / "out" / "report.html").exists()  # the run died before its index
    env.pop("GEOSEG_MONITOR_CRASH_AFTER")
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    aoi = tmp_path / "out" / "aoi1"
    item = json.loads((aoi / "item.json").read_text())
    validate_item(item)
    assert_checksums(aoi, item)
    assert item["properties"]["end_datetime"] == "2021-03-01T00:00:00Z"
    assert not list((tmp_path / "out").rglob("*.tmp*"))


def test_monitor_index_lists_every_aoi_with_alerts_by_confidence(tmp_path):
    cfg = _monitor_project(tmp_path, ["20210101", "20210201", "20210301"])
    s = run_monitor(cfg)
    out = tmp_path / "out"
    doc = (out / "report.html").read_text()
    assert external_references(doc) == [] and doc.startswith("<!DOCTYPE html>")
    assert f"<code>{s['run_id']}</code>" in doc
    p = Tables()
    p.feed(doc)
    rows, links = p.tables["aoi-index"], p.links["aoi-index"]
    assert rows[0][0] == "AOI"
    body = {r[0].split(" · ")[0]: (r, lk) for r, lk in zip(rows[1:-1], links[1:-1])}
    assert list(body) == ["aoi1", "aoi2", "far"]  # config order, every AOI
    sums = {"high": [0, 0.0], "low": [0, 0.0], "rejected": [0, 0.0]}
    for aoi in ("aoi1", "aoi2"):
        row, lk = body[aoi]
        expected = _totals(out / aoi / "alerts.gpkg")
        got = {c: (int(row[1 + 2 * i]), float(row[2 + 2 * i])) for i, c in enumerate(("high", "low", "rejected"))}
        assert got == {c: (n, pytest.approx(ha, abs=1e-4)) for c, (n, ha) in expected.items()}
        assert row[7] == "3" and row[8] == "2021-03-01"  # scenes applied, last one
        assert lk == [f"{aoi}/report.html", f"{aoi}/item.json"]
        assert all((out / h).is_file() for h in lk)
        for c, (n, ha) in expected.items():
            sums[c][0] += n
            sums[c][1] += ha
    assert _totals(out / "aoi1" / "alerts.gpkg")["high"] == (1, pytest.approx(1.0))  # patch A confirmed
    assert _totals(out / "aoi1" / "alerts.gpkg")["low"] == (1, pytest.approx(0.25))  # patch B once
    assert body["far"][0][1] == "no outputs yet (no scene applied)" and body["far"][1] == []
    total = rows[-1]
    assert total[0] == "all AOIs"
    assert [int(total[1]), int(total[3]), int(total[5])] == [sums[c][0] for c in ("high", "low", "rejected")]
    assert float(total[2]) == pytest.approx(sums["high"][1], abs=1e-4)
    # nothing new: the index and catalog are not touched either
    before = {n: (out / n).read_bytes() for n in ("report.html", "catalog.json")}
    assert run_monitor(cfg)["status"] == "nothing new"
    assert before == {n: (out / n).read_bytes() for n in ("report.html", "catalog.json")}


def test_monitor_index_older_than_an_aoi_item_is_rewritten(tmp_path):
    """A run killed between the AOIs' delivery and its index: the next run (nothing new) repairs the index."""
    cfg = _monitor_project(tmp_path, ["20210101", "20210201"])
    run_monitor(cfg)
    out = tmp_path / "out"
    (out / "report.html").write_text("stale")
    old = (out / "aoi1" / "item.json").stat().st_mtime - 60
    os.utime(out / "report.html", (old, old))
    s = run_monitor(cfg)
    assert s["status"] == "nothing new"
    p = Tables()
    p.feed((out / "report.html").read_text())
    assert [r[0].split(" · ")[0] for r in p.tables["aoi-index"][1:-1]] == ["aoi1", "aoi2", "far"]


def _gpkg_version(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as con:
        return con.execute("PRAGMA application_id").fetchone()[0], con.execute("PRAGMA user_version").fetchone()[0]


def test_change_and_monitor_geopackages_are_version_1_2(change_dir, tmp_path):
    """GeoPackage 1.2 (not GDAL's default 1.4, which older GDAL/QGIS warn about), styles included."""
    assert _gpkg_version(change_dir / "loss.gpkg") == (0x47504B47, 10200)
    run_monitor(_monitor_project(tmp_path, ["20210101", "20210201"]))
    assert _gpkg_version(tmp_path / "out" / "aoi1" / "alerts.gpkg") == (0x47504B47, 10200)


# -- acquisition times ------------------------------------------------------------------------------------


def test_acquisition_time_flows_from_scene_tags_through_predict_into_change(tmp_path, linear_model):
    """Scene tag (or --acquired) -> run.json, product tags, predict item datetime -> change start/end."""
    from click.testing import CliRunner

    from geoseg.cli import cli as main
    from geoseg.predict.api import predict_scene
    from geoseg.testing import pattern_scene

    scene, _ = pattern_scene(64, 80)
    first = write_raster(tmp_path / "s1.tif", scene, descriptions=BANDS4, DATE="20160927")
    predict_scene(first, linear_model, tmp_path / "p1", progress=False)
    rec = json.loads((tmp_path / "p1" / "run.json").read_text())
    assert (rec["acquired"], rec["acquired_from"]) == ("2016-09-27T00:00:00Z", "input tag DATE")
    item = json.loads((tmp_path / "p1" / "item.json").read_text())
    validate_item(item)
    assert item["properties"]["datetime"] == "2016-09-27T00:00:00Z" and item["properties"]["created"] == rec["created"]
    with rasterio.open(tmp_path / "p1" / "landcover.tif") as src:
        assert src.tags()["ACQUISITION_DATETIME"] == "2016-09-27T00:00:00Z"
    # --acquired wins over the tags (a zone is converted to UTC); a scene without tags would use it alone
    second = write_raster(tmp_path / "s2.tif", scene, descriptions=BANDS4, DATE="20160927")
    r = CliRunner().invoke(main, ["predict", str(second), "-m", str(linear_model), "-o", str(tmp_path / "p2"),
                                  "--acquired", "2018-03-28T10:17:13+02:00", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "p2" / "run.json").read_text())["acquired"] == "2018-03-28T08:17:13Z"
    bad = CliRunner().invoke(main, ["predict", str(second), "-m", str(linear_model), "-o", str(tmp_path / "p3"),
                                    "--acquired", "spring 2018", "--quiet"])
    assert bad.exit_code == 2 and "--acquired" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "p3" / "landcover.tif").exists()
    # change between the two maps: the item spans the two acquisitions
    detect_change(tmp_path / "p1" / "landcover.tif", tmp_path / "p2" / "landcover.tif", tmp_path / "ch",
                  forest="trees", min_area=0)
    ch = json.loads((tmp_path / "ch" / "item.json").read_text())
    validate_item(ch)
    props = ch["properties"]
    assert props["datetime"] is None
    assert (props["start_datetime"], props["end_datetime"]) == ("2016-09-27T00:00:00Z", "2018-03-28T08:17:13Z")
