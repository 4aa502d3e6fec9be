"""geoseg's QGIS styles opened in real QGIS (headless), via ``tests/delivery/qgis_check.py`` and the system Python.

PyQGIS is not pip-installable, so the products are built here with the project's Python and checked by
``/usr/bin/python3 tests/delivery/qgis_check.py`` (Debian: ``apt-get install python3-qgis qgis-providers``; another
interpreter with PyQGIS can be named in ``GEOSEG_QGIS_PYTHON``).  Skips, with the reason, when there is
no PyQGIS.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import yaml

from geoseg.testing import ORIGIN, RES, pattern_scene, write_raster

CHECK = Path(__file__).with_name("qgis_check.py")
QGIS_PYTHON = os.environ.get("GEOSEG_QGIS_PYTHON", "/usr/bin/python3")


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    cfg = tmp / "qgis-config"
    cfg.mkdir(exist_ok=True)
    # headless, and QGIS's settings/profile in a scratch folder instead of the user's home
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(cfg), XDG_RUNTIME_DIR=str(cfg))
    os.chmod(cfg, 0o700)
    return env


@pytest.fixture(scope="module")
def qgis_env(tmp_path_factory) -> dict:
    env = _env(tmp_path_factory.mktemp("qgis"))
    if not Path(QGIS_PYTHON).is_file():
        pytest.skip(f"no {QGIS_PYTHON} to run PyQGIS with (set GEOSEG_QGIS_PYTHON)")
    try:
        r = subprocess.run([QGIS_PYTHON, "-c", "from qgis.core import QgsApplication, Qgis; print(Qgis.QGIS_VERSION)"],
                           capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot run {QGIS_PYTHON}: {e}")
    if r.returncode != 0:
        pytest.skip(f"{QGIS_PYTHON} has no PyQGIS (Debian: apt-get install python3-qgis qgis-providers): "
                    f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return env


def run_check(env: dict, *folders: Path) -> tuple[int, dict, list[str]]:
    r = subprocess.run([QGIS_PYTHON, str(CHECK), *map(str, folders)], capture_output=True, text=True, env=env,
                       timeout=300)
    try:
        summary = json.loads(r.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"qgis_check.py printed no JSON (exit {r.returncode}): {r.stderr[-2000:]}")
    return r.returncode, summary, [ln for ln in r.stderr.splitlines() if ln.startswith("FAIL: ")]


# -- the products, built small -----------------------------------------------------------------------------


def _predict(root: Path, model: Path) -> Path:
    from geoseg.predict.api import predict_scene

    scene, _ = pattern_scene(120, 160)
    src = write_raster(root / "scene.tif", scene, descriptions=("B2", "B3", "B4", "B8"))
    predict_scene(src, model, root / "predict", probabilities=True, confidence=True, vector="gpkg",
                  vector_options={"simplify": None}, progress=False)
    return root / "predict"


def _change(root: Path) -> Path:
    from geoseg.change.api import detect_change

    tags = {"CLASS_0": "water", "CLASS_1": "trees", "CLASS_2": "built"}
    b = np.zeros((60, 80), np.uint8)
    b[:30] = 1
    a = b.copy()
    a[5:15, 5:25] = 2  # loss
    a[40:50, 40:60] = 1  # gain
    a[20:22, :] = 255  # unobserved
    before = write_raster(root / "before.tif", b, nodata=255, **tags)
    after = write_raster(root / "after.tif", a, nodata=255, **tags)
    detect_change(before, after, root / "change", min_area=0)
    return root / "change"


def _monitor(root: Path) -> Path:
    """Five dates: alert A confirmed (high), B rejected, C seen once at the end (low)."""
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.monitoring.api import run_monitor

    lost = {(10, 20, 10, 20): {"20210201", "20210301", "20210601"}, (25, 30, 25, 30): {"20210301"},
            (32, 36, 30, 36): {"20210601"}}
    (root / "scenes").mkdir()
    for d in ["20210101", "20210201", "20210301", "20210401", "20210601"]:
        c = np.ones((40, 40), np.uint8)
        c[:5] = 0
        for (r0, r1, c0, c1), dates in lost.items():
            if d in dates:
                c[r0:r1, c0:c1] = 0
        write_raster(root / "scenes" / f"S2_{d}_landcover.tif", c, nodata=255, CLASS_0="grass", CLASS_1="trees")
    x0, y1 = ORIGIN
    aoi = box(x0 + 2 * RES, y1 - 38 * RES, x0 + 38 * RES, y1 - 2 * RES)
    gpd.GeoDataFrame({"id": ["aoi1"]}, geometry=[aoi], crs="EPSG:32633").to_file(root / "aois.gpkg", engine="pyogrio")
    cfg = {"aois": "aois.gpkg", "scenes": {"glob": "scenes/*.tif"}, "kind": "landcover", "forest": "trees",
           "confirm_days": 90, "output": "monitor"}
    (root / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    assert run_monitor(root / "monitor.yaml")["status"] == "ok"
    (root / "aois.gpkg").unlink()  # an input, not a product: keep it out of the folders checked
    return root / "monitor"


@pytest.fixture(scope="module")
def products(tmp_path_factory, linear_model, qgis_env) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qgis-products")
    return {"predict": _predict(root, linear_model), "change": _change(root), "monitor": _monitor(root)}


# -- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_styles_apply_and_render_in_qgis(qgis_env, products):
    rc, summary, fails = run_check(qgis_env, *products.values())
    assert rc == 0 and summary["ok"], "\n".join(fails)
    layers = {(Path(x["path"]).name, x.get("layer")): x for x in summary["layers"]}
    assert set(layers) == {("landcover.tif", None), ("probabilities.tif", None), ("confidence.tif", None),
                           ("landcover.gpkg", "landcover"), ("change.tif", None), ("loss.gpkg", "loss"),
                           ("alerts.gpkg", "alerts"), ("alerts_gfw.tif", None)}
    # QGIS applied every style on open: renderer types as promised in docs/delivery.md
    assert {k[0]: x["renderer_on_open"] for k, x in layers.items()} == {
        "landcover.tif": "paletted", "change.tif": "paletted", "probabilities.tif": "singlebandpseudocolor",
        "confidence.tif": "singlebandpseudocolor", "alerts_gfw.tif": "singlebandpseudocolor",
        "landcover.gpkg": "categorizedSymbol", "loss.gpkg": "singleSymbol", "alerts.gpkg": "categorizedSymbol"}
    # class names and colours as QGIS read them, against the run's classes
    run = json.loads((products["predict"] / "run.json").read_text())
    cls = {str(c["value"]): [c["name"], c["color"].lower(), 255] for c in run["classes"]}
    assert layers["landcover.tif", None]["classes"] == cls
    assert layers["landcover.gpkg", "landcover"]["categories"] == [[v, n, c] for v, (n, c, _) in cls.items()]
    assert [c[0] for c in layers["alerts.gpkg", "alerts"]["categories"]] == ["high", "low", "rejected"]
    assert layers["change.tif", None]["classes"] == {"0": ["no_change", "#d9d9d9", 255],
                                                     "1": ["forest_loss", "#e31a1c", 255],
                                                     "2": ["forest_gain", "#33a02c", 255]}
    # rendered pixel by pixel in the style's colours (the percent ramp on the scaled 0..1 values QGIS shows)
    for k, x in layers.items():
        if x["kind"] == "raster":
            assert x["render"]["pixels_matching_style"] >= 0.999, k
    assert layers["probabilities.tif", None]["ramp"]["max"] == pytest.approx(1.0)
    # every alert confidence present in the data is drawn in its colour
    assert {k for k, n in layers["alerts.gpkg", "alerts"]["render"]["pixels_per_category"].items() if n} == {
        "high", "low", "rejected"}
    # CRS and feature counts as GDAL/pyogrio see them
    for (name, layer), x in layers.items():
        path = Path(x["path"])
        if layer is None:
            with rasterio.open(path) as src:
                assert x["crs"] == f"EPSG:{src.crs.to_epsg()}", name
        else:
            info = pyogrio.read_info(path, layer=layer)
            assert x["feature_count"] == info["features"] > 0, name
            assert x["crs"] == info["crs"], name


@pytest.mark.slow
def test_check_fails_on_broken_styles(qgis_env, products, tmp_path):
    """The check can fail: a truncated QML, the old 0..100 ramp on a 0.01-scaled raster, no default style."""
    from geoseg.delivery.style import percent_qml

    out = shutil.copytree(products["predict"], tmp_path / "predict")
    qml = out / "landcover.qml"
    qml.write_text(qml.read_text()[:-200])  # not XML any more
    (out / "probabilities.qml").write_text(percent_qml(scale=1.0))  # ramp on 0..100 while QGIS shows 0..1
    with sqlite3.connect(out / "landcover.gpkg") as con:
        con.execute("UPDATE layer_styles SET useAsDefault = 0")
    con.close()
    rc, summary, fails = run_check(qgis_env, out)
    assert rc == 1 and not summary["ok"]
    failed = {f.split(":", 2)[1].strip() for f in fails}
    assert failed == {str(out / "landcover.tif"), str(out / "probabilities.tif"),
                      str(out / "landcover.gpkg|landcover")}, fails  # confidence.tif still passes
    assert any("is shown as 0..1" in f for f in fails if "probabilities" in f), fails
