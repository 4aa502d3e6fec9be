"""Monitoring at the scale of a tile: block-wise alert patches equal a whole-AOI pass, the AOI's outputs do not
depend on the block size, and a window read on the AOI grid equals that part of a whole read."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from geoseg.io.grid import Window
from geoseg.io.warp import Grid, read_on_grid, sub_grid
from geoseg.monitoring import state as ms
from geoseg.monitoring.alerts import _alert_id, _area_ha
from geoseg.monitoring.patches import derive_alerts
from geoseg.testing import ORIGIN, RES, write_raster


def _grid(h: int, w: int) -> Grid:
    from rasterio.crs import CRS

    return Grid(CRS.from_epsg(32633).to_wkt(), (RES, 0.0, ORIGIN[0], 0.0, -RES, ORIGIN[1]), w, h)


def _reference_alerts(aoi_id: str, state: ms.PixelState, grid: Grid) -> list[dict]:
    """The whole-AOI derivation of geoseg <= 0.4 (rasterio.features.shapes per date over the whole state,
    counts by rasterizing the polygons): what the block-wise one must reproduce."""
    import shapely.affinity
    from affine import Affine
    from rasterio.features import rasterize, shapes
    from shapely.geometry import shape

    active = np.isin(state.confidence, (ms.LOW, ms.HIGH, ms.REJECTED)) & (state.first_loss != ms.NONE)
    polys, firsts = [], []
    for d in np.unique(state.first_loss[active]):
        m = active & (state.first_loss == d)
        for geom, _ in shapes(m.astype(np.uint8), mask=m, connectivity=4, transform=Affine.identity()):
            polys.append(shape(geom))
            firsts.append(int(d))
    labels = rasterize([(p, i + 1) for i, p in enumerate(polys)], out_shape=state.shape, fill=0,
                       transform=Affine.identity(), dtype="int32").ravel()
    n = len(polys) + 1
    cnt = np.bincount(labels, minlength=n)
    n_high = np.bincount(labels, weights=(state.confidence == ms.HIGH).ravel(), minlength=n).astype(int)
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, labels, state.last_loss.ravel().astype(np.int64))
    g = grid.affine
    geoms = [shapely.affinity.affine_transform(p, (g.a, g.b, g.d, g.e, g.c, g.f)) for p in polys]
    areas = _area_ha(geoms, grid)
    out = [{"alert_id": _alert_id(aoi_id, d, p), "n_pixels": int(cnt[i]), "n_high": int(n_high[i]),
            "last": int(last[i]), "area_ha": areas[i - 1], "wkb": geoms[i - 1].wkb_hex}
           for i, (p, d) in enumerate(zip(polys, firsts), start=1)]
    return sorted(out, key=lambda a: a["alert_id"])


def _random_state(h: int, w: int, seed: int) -> ms.PixelState:
    """Patches of a few dates (coarse cells, so many cross block seams), mixed confidences, holes."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 6, size=(h // 7 + 1, w // 7 + 1))
    first = np.repeat(np.repeat(cells, 7, 0), 7, 1)[:h, :w].astype(np.int32)
    first = np.where(first >= 3, ms.NONE, 2000 + 30 * first).astype(np.int32)
    first[rng.random((h, w)) < 0.05] = ms.NONE  # holes and pinholes
    st = ms.initial_state(np.ones((h, w), bool))
    conf = np.where(first == ms.NONE, ms.NO_ALERT, rng.choice([ms.LOW, ms.HIGH, ms.REJECTED], size=(h, w)))
    last = np.where(first == ms.NONE, ms.NONE, first + rng.integers(0, 60, size=(h, w))).astype(np.int32)
    arrays = {**st.arrays(), "confidence": conf.astype(np.uint8), "first_loss": first, "last_loss": last}
    return ms.PixelState(**arrays)


@pytest.mark.parametrize("block", [None, 16, 37, 64])
def test_block_wise_patches_equal_the_whole_aoi_pass(block):
    h, w = 150, 131
    state, grid = _random_state(h, w, seed=3), _grid(h, w)
    ref = _reference_alerts("a", state, grid)
    got = derive_alerts("a", state, grid, block_size=block)
    assert len(ref) > 50
    got_rows = sorted(({"alert_id": a["alert_id"], "n_pixels": a["n_pixels"], "n_high": a["n_high"],
                        "last": ms.to_days(a["last_detected"]), "area_ha": a["area_ha"],
                        "wkb": a["geometry"].geoms[0].wkb_hex if len(a["geometry"].geoms) == 1 else None}
                       for a in got), key=lambda a: a["alert_id"])
    assert [r["alert_id"] for r in got_rows] == [r["alert_id"] for r in ref]
    assert got_rows == ref


def test_patch_spanning_many_blocks_is_one_alert():
    h, w = 100, 100
    first = np.full((h, w), ms.NONE, np.int32)
    first[5:95, 5:95] = 2500
    first[40:60, 40:60] = ms.NONE  # a hole with another event inside
    first[45:55, 45:55] = 2600
    st = ms.initial_state(np.ones((h, w), bool))
    conf = np.where(first == ms.NONE, ms.NO_ALERT, ms.LOW).astype(np.uint8)
    state = ms.PixelState(**{**st.arrays(), "confidence": conf, "first_loss": first, "last_loss": first.copy()})
    alerts = derive_alerts("a", state, _grid(h, w), block_size=16)
    assert sorted(a["n_pixels"] for a in alerts) == [100, 90 * 90 - 400]
    big = max(alerts, key=lambda a: a["n_pixels"])
    assert len(big["geometry"].geoms[0].interiors) == 1
    key = f"a|{ms.from_days(2500).isoformat()}|5,5"  # its first pixel: row 5, col 5
    assert big["alert_id"] == hashlib.sha1(key.encode()).hexdigest()[:16]


def test_window_read_on_grid_equals_the_whole_read(tmp_path):
    a = np.arange(60 * 50, dtype=np.uint16).reshape(60, 50)
    path = write_raster(tmp_path / "x.tif", a)
    g = _grid(70, 45)  # reaches past the raster's bottom: boundless, not covered there
    g = Grid(g.crs_wkt, (RES, 0.0, ORIGIN[0] + 3 * RES, 0.0, -RES, ORIGIN[1]), 45, 70)
    whole, _, _, cov = read_on_grid(str(path), g)
    win = Window(20, 10, 50, 30)
    part, _, _, pcov = read_on_grid(str(path), g, window=win)
    assert np.array_equal(part, whole[:, 20:70, 10:40]) and np.array_equal(pcov, cov[20:70, 10:40])
    assert not pcov.all()
    assert sub_grid(g, win).affine.c == g.affine.c + 10 * RES


def _series_project(tmp, h=600, w=530):
    """Three dates of class rasters (one arriving late) whose loss patches cross 256 px block seams, and an
    AOI polygon with a slanted edge."""
    import geopandas as gpd
    import yaml
    from shapely.geometry import Polygon

    rng = np.random.default_rng(7)
    cells = rng.random((h // 9 + 1, w // 9 + 1))
    up = lambda m: np.repeat(np.repeat(m, 9, 0), 9, 1)[:h, :w]  # noqa: E731
    base = np.where(up(cells < 0.15), 0, 1).astype(np.uint8)
    lost = up((cells > 0.8) & (cells < 0.9))
    again = up(cells > 0.87)
    (tmp / "scenes").mkdir(parents=True)
    for date, a in (("20210101", base), ("20210201", np.where(lost, 0, base)),
                    ("20210301", np.where(lost & ~again, 0, base))):
        a = a.astype(np.uint8)
        if date == "20210301":
            a[100:160, 200:300] = 255  # clouds
        write_raster(tmp / "scenes" / f"S2_{date}_lc.tif", a, nodata=255, CLASS_0="grass", CLASS_1="trees")
    x0, y1 = ORIGIN
    aoi = Polygon([(x0 + 3 * RES, y1 - 3 * RES), (x0 + (w - 2) * RES, y1 - 3 * RES),
                   (x0 + (w - 2) * RES, y1 - (h - 50) * RES), (x0 + 200 * RES, y1 - (h - 2) * RES),
                   (x0 + 3 * RES, y1 - (h - 2) * RES)])
    gpd.GeoDataFrame({"id": ["aoi1"]}, geometry=[aoi], crs="EPSG:32633").to_file(tmp / "aois.gpkg", engine="pyogrio")
    cfg = {"aois": "aois.gpkg", "scenes": {"glob": "scenes/*.tif"}, "forest": "trees", "output": "out"}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "monitor.yaml"


def _outputs(out):
    import pyogrio
    import rasterio

    folder = out / "aoi1"
    rasters = {}
    for p in sorted([folder / "state.tif", folder / "alerts_gfw.tif", *(folder / "observations").glob("*.tif")]):
        with rasterio.open(p) as src:
            rasters[p.name] = (src.read(), src.tags())
    alerts = pyogrio.read_dataframe(folder / "alerts.gpkg", layer="alerts")
    rows = alerts.drop(columns=["geometry", "run_id", "created_at", "updated_at"]).to_dict("records")
    for r, g in zip(rows, alerts.geometry):
        r["wkb"] = g.wkb_hex
    summary = pyogrio.read_dataframe(folder / "alerts.gpkg", layer="aoi_summary", read_geometry=False)
    return rasters, rows, summary.drop(columns=["run_id"]).to_dict("records")


def test_outputs_do_not_depend_on_the_block_size(tmp_path, monkeypatch):
    """The same series (a late scene replayed included) with 256 px blocks (3 x 3 blocks, patches across
    seams) and with one block: the same state, observations, GFW raster, alerts and summary."""
    import shutil

    from geoseg.monitoring import run as mrun
    from geoseg.monitoring.api import run_monitor

    config = _series_project(tmp_path)
    late = tmp_path / "scenes" / "S2_20210201_lc.tif"
    held = tmp_path / "held.tif"
    results = []
    for block in (256, 1024):
        monkeypatch.setattr(mrun, "BLOCK_SIZE", block)
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        shutil.move(late, held)  # the 2nd date arrives after the 3rd: replayed
        assert run_monitor(config)["status"] == "ok"
        shutil.move(held, late)
        s = run_monitor(config)
        assert s["late_scenes"] == 1
        results.append(_outputs(tmp_path / "out"))
    (r256, a256, s256), (r1k, a1k, s1k) = results
    assert r256.keys() == r1k.keys() and len(r256) == 5
    for name in r256:
        assert np.array_equal(r256[name][0], r1k[name][0]), name
        assert r256[name][1] == r1k[name][1], name
    assert len(a256) > 20 and a256 == a1k
    assert s256 == s1k
    assert {r["confidence"] for r in a256} >= {"high", "low"}
    import shapely

    cols = [(shapely.from_wkb(bytes.fromhex(r["wkb"])).bounds, r) for r in a256]
    x0, y1 = ORIGIN
    crossing = [r for (bx0, by0, bx1, by1), r in cols
                if (bx0 - x0) / RES < 256 < (bx1 - x0) / RES or (y1 - by1) / RES < 256 < (y1 - by0) / RES]
    assert crossing  # some alerts were merged across a block seam


def test_scene_kind_crop_written_and_read_by_block(tmp_path, monkeypatch, linear_model):
    """kind: scene with 256 px blocks (the crop written, its prediction read, block by block) gives the
    observations and state of one block, and those of the same classes given as class rasters."""
    import shutil

    import yaml

    from geoseg.monitoring import run as mrun
    from geoseg.monitoring.api import run_monitor

    config = _series_project(tmp_path, h=300, w=280)
    (tmp_path / "imagery").mkdir()
    import rasterio

    for p in sorted((tmp_path / "scenes").glob("*.tif")):
        with rasterio.open(p) as src:
            cls = src.read(1)
        x = np.random.default_rng(0).integers(1000, 1100, size=(4, *cls.shape))
        for k in range(2):  # the model's classes: argmax of bands 1..3 (0 water, 1 trees)
            x[k] += np.where(cls == k, 600, 0)
        x[:, cls == 255] = 0
        write_raster(tmp_path / "imagery" / p.name, x.astype(np.uint16), nodata=0,
                     descriptions=("B2", "B3", "B4", "B8"))
    assert run_monitor(config)["status"] == "ok"
    ref, _, _ = _outputs(tmp_path / "out")
    cfg = yaml.safe_load(config.read_text())
    cfg.update(scenes={"glob": "imagery/*.tif"}, kind="scene", model=str(linear_model))
    config.write_text(yaml.safe_dump(cfg))
    got = []
    for block in (256, 1024):
        monkeypatch.setattr(mrun, "BLOCK_SIZE", block)
        shutil.rmtree(tmp_path / "out")
        assert run_monitor(config)["scenes_processed"] == 3
        got.append(_outputs(tmp_path / "out"))
    key = lambda d: {k.split("_")[0]: v for k, v in d.items()}  # noqa: E731 - observation names hold the scene id
    ref = key(ref)
    (r256, a256, _), (r1k, a1k, _) = got
    r256, r1k = key(r256), key(r1k)
    assert len(ref) == 5
    for name in ref:
        assert np.array_equal(r256[name][0], r1k[name][0]), name
        assert np.array_equal(r256[name][0], ref[name][0]), name
    assert a256 == a1k and len(a256) > 5
