"""``geoseg monitor run``: confirmation over a series, idempotency, crash-resume, lock contention, late scenes.

Synthetic class rasters (EPSG:32633, 10 m, class 1 = ``trees`` via CLASS_<v> tags) with the date in the
file name; the AOI is a GeoPackage polygon.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import yaml

from geoseg.monitoring import state as ms
from geoseg.monitoring.api import EXIT_LOCKED, run_monitor
from geoseg.testing import ORIGIN, RES, write_raster

H = W = 40
PY = sys.executable


def _classes(date: str, lost: dict[str, set]) -> np.ndarray:
    """All trees (1) except: a grass band (0) in rows 0..4, and the pixels lost by ``date``."""
    a = np.ones((H, W), np.uint8)
    a[:5] = 0
    for (r0, r1, c0, c1), dates in lost.items():
        if date in dates:
            a[r0:r1, c0:c1] = 0
    return a


# patch A (rows 10..19, cols 10..19) lost on 20210201 and again 20210301 -> high
# patch B (rows 25..29, cols 25..29) lost on 20210301 only, forest again afterwards -> rejected later
LOST = {(10, 20, 10, 20): {"20210201", "20210301", "20210601"},
        (25, 30, 25, 30): {"20210301"}}
DATES = ["20210101", "20210201", "20210301", "20210401", "20210601"]


def _scene(folder: Path, date: str, cloud: bool = False) -> Path:
    a = _classes(date, LOST)
    if cloud:
        a[30:40, 0:10] = 255
    return write_raster(folder / f"S2_{date}_landcover.tif", a, nodata=255, CLASS_0="grass", CLASS_1="trees")


def _project(tmp: Path, dates=DATES) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    (tmp / "scenes").mkdir(parents=True, exist_ok=True)
    for d in dates:
        _scene(tmp / "scenes", d, cloud=(d == "20210401"))
    x0, y1 = ORIGIN
    aoi = box(x0 + 2 * RES, y1 - 38 * RES, x0 + 38 * RES, y1 - 2 * RES)
    gpd.GeoDataFrame({"id": ["aoi1"]}, geometry=[aoi], crs="EPSG:32633").to_file(tmp / "aois.gpkg", engine="pyogrio")
    cfg = {"aois": "aois.gpkg", "scenes": {"glob": "scenes/*.tif"}, "kind": "landcover", "forest": "trees",
           "confirm_days": 90, "output": "out"}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "monitor.yaml"


def _cli(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "GEOSEG_MONITOR_CRASH_AFTER"}
    e.update(env or {})
    return subprocess.run([PY, "-c", "from geoseg.cli import main; main()", "monitor", "run", str(config), *args],
                          capture_output=True, text=True, env=e, cwd=str(Path(__file__).parents[2]))


def _alerts(out: Path) -> list[dict]:
    df = pyogrio.read_dataframe(out / "aoi1" / "alerts.gpkg", layer="alerts")
    keep = ["alert_id", "first_detected", "last_detected", "confidence", "status", "area_ha", "n_pixels"]
    rows = df[keep].to_dict("records")
    for r, g in zip(rows, df.geometry):
        r["wkb"] = g.wkb_hex
    return sorted(rows, key=lambda r: r["alert_id"])


def _state(out: Path) -> np.ndarray:
    with rasterio.open(out / "aoi1" / "state.tif") as src:
        return src.read()


def _gfw(out: Path) -> np.ndarray:
    with rasterio.open(out / "aoi1" / "alerts_gfw.tif") as src:
        return src.read(1)


def _ledger_rows(out: Path) -> list[tuple]:
    con = sqlite3.connect(out / "aoi1" / "ledger.sqlite")
    try:
        return sorted(con.execute("SELECT scene_id, status, late FROM scenes").fetchall())
    finally:
        con.close()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_low_to_high_and_rejection(tmp_path):
    cfg = _project(tmp_path, DATES[:3])
    s = run_monitor(cfg)
    assert s["status"] == "ok" and s["scenes_processed"] == 3
    out = tmp_path / "out"
    alerts = {a["first_detected"]: a for a in _alerts(out)}
    a = alerts["2021-02-01"]
    assert a["confidence"] == "high" and a["status"] == "confirmed" and a["n_pixels"] == 100
    assert a["area_ha"] == pytest.approx(1.0)  # 100 px of 100 m2
    assert a["last_detected"] == "2021-03-01"
    b = alerts["2021-03-01"]
    assert b["confidence"] == "low" and b["n_pixels"] == 25
    gfw = _gfw(out)
    assert gfw[15, 15] == 3 * 10000 + ms.to_days("2021-02-01")
    assert gfw[27, 27] == 2 * 10000 + ms.to_days("2021-03-01")
    assert gfw[0, 0] == 0 and gfw[35, 35] == 0
    # two more scenes: patch B is forest again twice (one cloudy scene counts neither way elsewhere)
    for d in DATES[3:]:
        _scene(tmp_path / "scenes", d, cloud=(d == "20210401"))
    s2 = run_monitor(cfg)
    assert s2["scenes_processed"] == 2
    alerts = {a["first_detected"]: a for a in _alerts(out)}
    assert alerts["2021-03-01"]["status"] == "rejected"
    assert alerts["2021-02-01"]["status"] == "confirmed"
    changes = list((out / "aoi1").glob("changes_since_*.geojson"))
    assert {p.name for p in changes} == {"changes_since_start.geojson", "changes_since_20210301.geojson"}
    doc = json.loads((out / "aoi1" / "changes_since_20210301.geojson").read_text())
    # only what changed in the second run: the rejected alert B and the re-observed alert A
    ids = {f["properties"]["alert_id"] for f in doc["features"]}
    assert alerts["2021-03-01"]["alert_id"] in ids
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0][0]
    from shapely.geometry import shape

    for f in doc["features"]:  # RFC 7946: exterior rings counter-clockwise
        assert all(p.exterior.is_ccw for p in shape(f["geometry"]).geoms)
    assert 14 < lon < 16 and 45 < lat < 47  # WGS84 lon/lat (UTM 33N, 5100 km north)
    summ = pyogrio.read_dataframe(out / "aoi1" / "alerts.gpkg", layer="aoi_summary", read_geometry=False)
    assert list(summ["date"]) == ["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01", "2021-06-01"]
    assert summ["observed_fraction"].iloc[3] < summ["observed_fraction"].iloc[2]  # the cloudy scene


@pytest.mark.slow
def test_idempotent_second_run_changes_nothing(tmp_path):
    cfg = _project(tmp_path)
    r1 = _cli(cfg)
    assert r1.returncode == 0, r1.stderr
    before = _snapshot(tmp_path / "out")
    rows = _ledger_rows(tmp_path / "out")
    r2 = _cli(cfg)
    assert r2.returncode == 0, r2.stderr
    s = json.loads(r2.stdout)
    assert s["status"] == "nothing new" and s["message"] == "nothing new" and s["scenes_processed"] == 0
    after = _snapshot(tmp_path / "out")
    assert before.keys() == after.keys()
    assert all(before[k] == after[k] for k in before if not k.endswith(".lock"))
    assert _ledger_rows(tmp_path / "out") == rows and len(rows) == len(DATES)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["observation:2", "outputs:3", "state:2", "ledger:4", "changes:1"])
def test_crash_resume_gives_identical_results(tmp_path, step):
    ref = _project(tmp_path / "ref")
    assert _cli(ref).returncode == 0
    cfg = _project(tmp_path / "crash")
    r = _cli(cfg, env={"GEOSEG_MONITOR_CRASH_AFTER": step})
    assert r.returncode == 86, (r.returncode, r.stderr)
    r2 = _cli(cfg)
    assert r2.returncode == 0, r2.stderr
    a, b = tmp_path / "ref" / "out", tmp_path / "crash" / "out"
    assert _alerts(a) == _alerts(b)
    assert np.array_equal(_state(a), _state(b))
    assert np.array_equal(_gfw(a), _gfw(b))
    assert _ledger_rows(a) == _ledger_rows(b)
    # nothing leaked: no temporaries left behind
    assert not list(b.rglob("*.tmp*"))
    # the crashed run's alerts are still delivered: the union of change files holds every alert
    delivered = set()
    for p in (b / "aoi1").glob("changes_since_*.geojson"):
        delivered |= {f["id"] for f in json.loads(p.read_text())["features"]}
    assert delivered == {x["alert_id"] for x in _alerts(b)}
    with rasterio.open(b / "aoi1" / "state.tif") as src:
        assert len(json.loads(src.tags()["GEOSEG_APPLIED"])) == len(DATES)


@contextlib.contextmanager
def _aoi_locked(folder: Path):
    """Hold an AOI folder's lock (as a concurrent run would) for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.mark.slow
def test_lock_contention_exits_75(tmp_path):
    cfg = _project(tmp_path)
    with _aoi_locked(tmp_path / "out" / "aoi1"):
        r = _cli(cfg)
        assert r.returncode == EXIT_LOCKED == 75
        assert "locked" in r.stderr and "--wait" in r.stderr
        assert not (tmp_path / "out" / "aoi1" / "state.tif").exists()
    r = _cli(cfg)
    assert r.returncode == 0 and json.loads(r.stdout)["scenes_processed"] == len(DATES)


def test_late_scene_is_replayed(tmp_path):
    ref = _project(tmp_path / "ref")
    run_monitor(ref)
    # same scenes, but 20210201 arrives only after the others were processed
    cfg = _project(tmp_path / "late")
    held = tmp_path / "held"
    held.mkdir()
    src = tmp_path / "late" / "scenes" / "S2_20210201_landcover.tif"
    shutil.move(src, held / src.name)
    s1 = run_monitor(cfg)
    assert s1["scenes_processed"] == 4
    shutil.move(held / src.name, src)
    s2 = run_monitor(cfg)
    assert s2["scenes_processed"] == 1 and s2["late_scenes"] == 1
    a, b = tmp_path / "ref" / "out", tmp_path / "late" / "out"
    assert np.array_equal(_state(a), _state(b))
    ra = {x["alert_id"]: x for x in _alerts(a)}
    rb = {x["alert_id"]: x for x in _alerts(b) if x["status"] != "superseded"}
    assert ra == rb
    assert ("scenes/S2_20210201_landcover.tif", "done", 1) in _ledger_rows(b)
    # the alert first seen on 2021-03-01 before the late scene arrived is kept, marked superseded
    assert any(x["status"] == "superseded" for x in _alerts(b))


@pytest.mark.slow
def test_bad_config_exit_3(tmp_path):
    (tmp_path / "c.yaml").write_text("aois: nope.gpkg\nscenes: {glob: '*.tif'}\noutput: out\n")
    r = _cli(tmp_path / "c.yaml")
    assert r.returncode == 3 and "nope.gpkg" in r.stderr


def test_scene_kind_predicts_only_the_aoi_crop(tmp_path, linear_model):
    """kind: scene runs the model on the AOI crop of each scene; alerts equal those of the class rasters."""
    ref = _project(tmp_path / "ref", DATES[:3])
    run_monitor(ref)
    proj = tmp_path / "model"
    _project(proj, DATES[:3])
    (proj / "imagery").mkdir()
    for d in DATES[:3]:
        cls = _classes(d, LOST)  # 1 trees, 0 grass -> model classes 1 trees, 0 water
        big = np.zeros((60, 70), np.uint8)
        big[:H, :W] = cls
        rng = np.random.default_rng(0)
        x = rng.integers(1000, 1100, size=(4, 60, 70))
        for k in range(3):
            x[k] += np.where(big == k, 600, 0)
        write_raster(proj / "imagery" / f"S2_{d}.tif", x.astype(np.uint16), descriptions=("B2", "B3", "B4", "B8"))
    cfg = yaml.safe_load((proj / "monitor.yaml").read_text())
    cfg.update(scenes={"glob": "imagery/*.tif"}, kind="scene", model=str(linear_model))
    (proj / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    s = run_monitor(proj / "monitor.yaml")
    assert s["scenes_processed"] == 3
    with rasterio.open(proj / "out" / "aoi1" / "state.tif") as src:
        assert (src.width, src.height) == (36, 36)  # the AOI grid, not the 70 x 60 scene
    strip = lambda rows: [{k: v for k, v in r.items() if k != "alert_id"} for r in rows]  # noqa: E731
    assert strip(_alerts(tmp_path / "ref" / "out")) == strip(_alerts(proj / "out"))
    assert pyogrio.read_dataframe(proj / "out" / "aoi1" / "alerts.gpkg", layer="alerts")["model_id"].iloc[0] \
        == "test-linear"


def test_stac_inventory(tmp_path):
    cfg = _project(tmp_path, DATES[:3])
    items = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"item-{d}", "geometry": None,
         "properties": {"datetime": f"{d[:4]}-{d[4:6]}-{d[6:]}T10:00:00Z"},
         "assets": {"landcover": {"href": f"scenes/S2_{d}_landcover.tif"}}} for d in DATES[:3]]}
    (tmp_path / "items.json").write_text(json.dumps(items))
    c = yaml.safe_load(cfg.read_text())
    c["scenes"] = {"stac": "items.json", "asset": "landcover"}
    cfg.write_text(yaml.safe_dump(c))
    s = run_monitor(cfg)
    assert s["scenes_processed"] == 3
    assert [r[0] for r in _ledger_rows(tmp_path / "out")] == [f"item-{d}" for d in DATES[:3]]


@pytest.mark.slow
def test_wait_takes_the_lock_when_released(tmp_path):
    import threading

    cfg = _project(tmp_path, DATES[:2])
    lock = tmp_path / "out" / "aoi1" / ".lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(1.5, os.close, args=(fd,)).start()
    r = _cli(cfg, "--wait")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["scenes_processed"] == 2


@pytest.mark.slow
def test_unknown_forest_class_is_bad_input(tmp_path):
    cfg = _project(tmp_path, DATES[:1])
    c = yaml.safe_load(cfg.read_text())
    c["forest"] = "jungle"
    cfg.write_text(yaml.safe_dump(c))
    r = _cli(cfg)
    assert r.returncode == 3 and "jungle" in r.stderr and "'forest' in the config" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("n_obs", [1, 3])
def test_sigkill_mid_run_then_resume(tmp_path, n_obs):
    """A real SIGKILL as soon as the n-th observation raster appears (wherever the process then is),
    then a rerun: the same result as an uninterrupted run."""
    import signal
    import time

    ref = _project(tmp_path / "ref")
    run_monitor(ref)
    cfg = _project(tmp_path / "kill")
    obs = tmp_path / "kill" / "out" / "aoi1" / "observations"
    p = subprocess.Popen([PY, "-c", "from geoseg.cli import main; main()", "monitor", "run", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(Path(__file__).parents[2]))
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < 30:
        if obs.is_dir() and len(list(obs.glob("2*.tif"))) >= n_obs:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    assert p.wait() == -signal.SIGKILL  # it was killed mid-run, not finished
    r = _cli(cfg)
    assert r.returncode == 0, r.stderr
    a, b = tmp_path / "ref" / "out", tmp_path / "kill" / "out"
    assert _alerts(a) == _alerts(b)
    assert np.array_equal(_state(a), _state(b)) and np.array_equal(_gfw(a), _gfw(b))
    assert _ledger_rows(a) == _ledger_rows(b)
    assert not list(b.rglob("*.tmp*"))


@pytest.mark.slow
def test_changes_file_per_run_and_config_change_refused(tmp_path):
    cfg = _project(tmp_path, DATES[:3])
    run_monitor(cfg)
    _scene(tmp_path / "scenes", "20210401", cloud=True)
    s = run_monitor(cfg)
    assert (s["alerts_new"], s["alerts_updated"]) == (0, 0)  # a cloudy scene that changes no alert
    _scene(tmp_path / "scenes", "20210601")
    s = run_monitor(cfg)
    assert s["alerts_updated"] == 2
    aoi = tmp_path / "out" / "aoi1"
    names = sorted(p.name for p in aoi.glob("changes_since_*.geojson"))
    assert names == ["changes_since_20210301.geojson", "changes_since_20210401.geojson",
                     "changes_since_start.geojson"]
    assert json.loads((aoi / "changes_since_20210301.geojson").read_text())["features"] == []
    assert len(json.loads((aoi / "changes_since_20210401.geojson").read_text())["features"]) == 2
    # the state depends on the rules: a changed rule is refused, not silently mixed in
    c = yaml.safe_load(cfg.read_text())
    c["confirm_days"] = 30
    cfg.write_text(yaml.safe_dump(c))
    _scene(tmp_path / "scenes", "20210701")
    r = _cli(cfg)
    assert r.returncode == 3 and "another config" in r.stderr


@pytest.mark.slow
def test_one_locked_aoi_does_not_block_the_others(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    cfg = _project(tmp_path, DATES[:3])
    x0, y1 = ORIGIN
    gpd.GeoDataFrame({"id": ["aoi1", "aoi2"]},
                     geometry=[box(x0 + 2 * RES, y1 - 38 * RES, x0 + 38 * RES, y1 - 2 * RES),
                               box(x0 + 20 * RES, y1 - 30 * RES, x0 + 30 * RES, y1 - 20 * RES)],
                     crs="EPSG:32633").to_file(tmp_path / "aois.gpkg", engine="pyogrio")
    with _aoi_locked(tmp_path / "out" / "aoi1"):
        r = _cli(cfg)
    assert r.returncode == 0  # the other run is processing aoi1: this one did all it could (docs/monitor.md)
    s = json.loads(r.stdout)
    assert s["status"] == "partial" and s["locked_aois"] == ["aoi1"]
    assert "Warning: skipped AOI(s) aoi1" in r.stderr
    assert (tmp_path / "out" / "aoi2" / "state.tif").exists()
    with rasterio.open(tmp_path / "out" / "aoi2" / "state.tif") as src:
        assert (src.width, src.height) == (10, 10)
    r = _cli(cfg)  # the lock is free again: aoi1 catches up, aoi2 has nothing new
    s = json.loads(r.stdout)
    assert r.returncode == 0 and s["scenes_processed"] == 3
    assert [a["status"] for a in s["aois"]] == ["ok", "nothing new"]


@pytest.mark.slow
def test_min_area_filters_alert_polygons_only(tmp_path):
    cfg = _project(tmp_path, DATES[:3])
    c = yaml.safe_load(cfg.read_text())
    c["min_area"] = "0.5ha"  # patch A is 1 ha, patch B 0.25 ha
    cfg.write_text(yaml.safe_dump(c))
    run_monitor(cfg)
    out = tmp_path / "out"
    assert [a["n_pixels"] for a in _alerts(out)] == [100]
    assert _gfw(out)[27, 27] == 2 * 10000 + ms.to_days("2021-03-01")  # the raster keeps every pixel
    c["min_area"] = "5"
    cfg.write_text(yaml.safe_dump(c))
    r = _cli(cfg)
    assert r.returncode == 3 and "min_area" in r.stderr


@pytest.mark.parametrize("name", ["monitor.yaml", "monitor-stac.yaml"])
def test_shipped_workflow_config_on_real_data(tmp_path, name):
    """workflows/monitor/: the Norcia Dynamic World labels (two dates, EPSG:4326), both inventories."""
    from geoseg.monitoring.api import load_config

    cfg = load_config(Path(__file__).parents[2] / "workflows" / "monitor" / name)
    cfg.output = tmp_path / "out"
    s = run_monitor(cfg)
    assert s["status"] == "ok" and s["scenes_processed"] == 2 and s["aoi_scenes_processed"] == 4
    assert s["alerts_new"] > 0 and s["alert_area_ha"] > 0
    for aoi in ("norcia_west", "norcia_east"):
        df = pyogrio.read_dataframe(tmp_path / "out" / aoi / "alerts.gpkg", layer="alerts")
        assert set(df["first_detected"]) == {"2017-10-18"} and set(df["confidence"]) == {"low"}  # 27 months apart
        assert (df["area_ha"] >= 0.1).all()
    assert run_monitor(cfg)["status"] == "nothing new"


def test_aoi_beyond_the_scene_without_nodata_is_not_observed(tmp_path):
    """Class rasters without a nodata value: pixels of the AOI grid outside the scene are unobserved
    (not class 0), whether read by window or reprojected."""
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.monitoring.api import load_config

    (tmp_path / "scenes").mkdir()
    a = np.ones((H, W), np.uint8)
    write_raster(tmp_path / "scenes" / "x_20210101.tif", a, CLASS_1="trees")
    x0, y1 = ORIGIN
    gpd.GeoDataFrame({"id": ["aoi1"]}, geometry=[box(x0 + 30 * RES, y1 - 20 * RES, x0 + 50 * RES, y1)],
                     crs="EPSG:32633").to_file(tmp_path / "aois.gpkg", engine="pyogrio")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"aois": "aois.gpkg", "scenes": {"glob": "scenes/*.tif"},
                                                      "output": "out"}))
    run_monitor(tmp_path / "m.yaml")
    with rasterio.open(next((tmp_path / "out" / "aoi1" / "observations").glob("*.tif"))) as src:
        obs = src.read(1)
    assert obs.shape == (20, 20)
    assert (obs[:, :10] == 1).all() and (obs[:, 10:] == 255).all()
    # the same through the reprojection path (a grid on another lattice)
    from geoseg.monitoring.api import Grid, read_on_grid

    g = Grid(rasterio.crs.CRS.from_epsg(32633).to_wkt(), (10.0, 0, x0 + 305.0, 0, -10.0, y1), 20, 20)
    data, nodata, meta, covered = read_on_grid(str(tmp_path / "scenes" / "x_20210101.tif"), g)
    assert covered[:, :9].all() and not covered[:, 10:].any()
    assert load_config(tmp_path / "m.yaml").forest == ["trees"]


@pytest.mark.slow
def test_crash_after_a_late_scene_commit_keeps_the_late_flag(tmp_path):
    cfg = _project(tmp_path)
    held = tmp_path / "held"
    held.mkdir()
    src = tmp_path / "scenes" / "S2_20210201_landcover.tif"
    shutil.move(src, held / src.name)
    assert _cli(cfg).returncode == 0
    shutil.move(held / src.name, src)
    r = _cli(cfg, env={"GEOSEG_MONITOR_CRASH_AFTER": "state"})  # committed, ledger not yet written
    assert r.returncode == 86
    r = _cli(cfg)
    assert r.returncode == 0 and json.loads(r.stdout)["scenes_processed"] == 0
    assert ("scenes/S2_20210201_landcover.tif", "done", 1) in _ledger_rows(tmp_path / "out")


def test_scene_missing_the_aoi_is_recorded_not_applied(tmp_path):
    from affine import Affine

    cfg = _project(tmp_path, DATES[:2])
    far = Affine(RES, 0.0, ORIGIN[0] + 100_000, 0.0, -RES, ORIGIN[1])
    write_raster(tmp_path / "scenes" / "S2_20210115_landcover.tif", np.zeros((H, W), np.uint8), nodata=255,
                 transform=far, CLASS_1="trees")
    s = run_monitor(cfg)
    assert s["scenes_processed"] == 2
    assert s["aois"][0]["skipped_no_overlap"] == ["scenes/S2_20210115_landcover.tif"]
    assert ("scenes/S2_20210115_landcover.tif", "no_overlap", 0) in _ledger_rows(tmp_path / "out")
    assert run_monitor(cfg)["status"] == "nothing new"


def test_alert_style_gfw_qml_and_report(tmp_path):
    """Issue 6: alerts.gpkg opens styled by confidence, alerts_gfw.tif has a QML, report.html lists the alerts."""
    import xml.etree.ElementTree as ET
    from html.parser import HTMLParser

    from geoseg.delivery.report import external_references

    cfg = _project(tmp_path, DATES[:3])
    run_monitor(cfg)
    aoi = tmp_path / "out" / "aoi1"
    con = sqlite3.connect(aoi / "alerts.gpkg")
    try:
        rows = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    finally:
        con.close()
    assert [(r[0], r[1]) for r in rows] == [("alerts", 1)]
    r = ET.fromstring(rows[0][2].split("\n", 1)[1]).find("renderer-v2")
    assert r.get("type") == "categorizedSymbol" and r.get("attr") == "confidence"
    assert [c.get("value") for c in r.findall("categories/category")] == ["high", "low", "rejected"]
    assert {n for n, _ in pyogrio.list_layers(aoi / "alerts.gpkg")} == {"alerts", "aoi_summary", "layer_styles"}
    q = ET.fromstring((aoi / "alerts_gfw.qml").read_text().split("\n", 1)[1])
    assert q.find("pipe/rasterrenderer").get("type") == "singlebandpseudocolor"

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cur, self.row, self.cell = {}, None, None, None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "table":
                self.cur = a.get("id")
                self.tables[self.cur] = []
            elif tag == "tr":
                self.row = []
            elif tag == "td":
                self.cell = ""

        def handle_endtag(self, tag):
            if tag == "td" and self.row is not None:
                self.row.append(self.cell.strip())
                self.cell = None
            elif tag == "tr" and self.row:
                self.tables[self.cur].append(self.row)
                self.row = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    doc = (aoi / "report.html").read_text()
    assert external_references(doc) == []
    p = Rows()
    p.feed(doc)
    alerts = _alerts(tmp_path / "out")
    assert sorted(row[0] for row in p.tables["alert-list"]) == sorted(a["alert_id"] for a in alerts)
    by_conf = {row[0]: (int(row[1]), float(row[2])) for row in p.tables["area-by-confidence"]}
    assert by_conf == {"high": (1, pytest.approx(1.0)), "low": (1, pytest.approx(0.25)), "rejected": (0, 0.0)}
    assert [row[0] for row in p.tables["scene-summary"]] == ["2021-01-01", "2021-02-01", "2021-03-01"]
    # nothing new: the report (like every other file) is left untouched
    before = (aoi / "report.html").read_bytes()
    assert run_monitor(cfg)["status"] == "nothing new"
    assert (aoi / "report.html").read_bytes() == before


def test_index_writes_wait_for_the_index_lock(tmp_path):
    """OUT/catalog.json and OUT/report.html are rewritten under OUT/.index.lock (concurrent runs on
    different AOIs would otherwise race on them)."""
    import threading

    from geoseg.monitoring.api import INDEX_LOCK, _write_index, load_config

    cfg = load_config(_project(tmp_path))
    cfg.output.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    fd = os.open(cfg.output / INDEX_LOCK, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another run writing the index would
        writer = threading.Thread(target=lambda: (_write_index(cfg, "run-x"), done.set()))
        writer.start()
        assert not done.wait(0.5) and not (cfg.output / "report.html").exists()
    finally:
        os.close(fd)
    writer.join(30)
    assert done.is_set() and (cfg.output / "report.html").exists() and (cfg.output / "catalog.json").exists()
