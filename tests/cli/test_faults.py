"""Bad input and faults as a new user meets them: a full disk, runs off a terminal (summaries, --log), a lost
worker, overlapping monitor runs.  Each is one clear line, nothing partial at a final path, a rerun completes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.testing import ORIGIN, RES, write_raster


@pytest.fixture
def runner():
    return CliRunner()


# -- overlapping monitor runs ------------------------------------------------------------------------------


def _monitor_project(tmp: Path) -> Path:
    """Two AOIs over two class rasters (trees lost in a patch on the second date), output ``out`` beside it."""
    scenes = tmp / "scenes"
    scenes.mkdir(parents=True)
    for date in ("20210101", "20210301"):
        a = np.ones((40, 40), np.uint8)
        if date == "20210301":
            a[10:20, 10:20] = 0
        write_raster(scenes / f"S2_{date}.tif", a, nodata=255, CLASS_0="grass", CLASS_1="trees")
    x0, y1 = ORIGIN

    def square(c0, r0, c1, r1):
        return [[[x0 + c0 * RES, y1 - r0 * RES], [x0 + c1 * RES, y1 - r0 * RES], [x0 + c1 * RES, y1 - r1 * RES],
                 [x0 + c0 * RES, y1 - r1 * RES], [x0 + c0 * RES, y1 - r0 * RES]]]

    features = [{"type": "Feature", "properties": {"id": aid}, "geometry": {"type": "Polygon", "coordinates": ring}}
                for aid, ring in (("aoi1", square(2, 2, 25, 25)), ("aoi2", square(20, 20, 38, 38)))]
    (tmp / "aois.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "features": features,
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}}))
    cfg = {"aois": "aois.geojson", "scenes": {"glob": "scenes/*.tif"}, "kind": "landcover", "forest": "trees",
           "output": "out"}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "monitor.yaml"


@contextlib.contextmanager
def _held(lock: Path):
    """Hold a lock file as another live run would (``fcntl.flock`` on its own open file)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_overlapping_monitor_runs_together_do_everything_and_exit_0(runner, tmp_path):
    """Run A holds aoi1 (the test's lock), run B does aoi2 and exits 0 with a warning; then A's turn on aoi2
    finds B done there; every AOI is done by one of them.  Only a run that could do nothing exits 75."""
    cfg = _monitor_project(tmp_path)
    out = tmp_path / "elsewhere"
    with _held(out / "aoi1" / ".lock"):
        r = runner.invoke(cli, ["monitor", "run", str(cfg), "-o", str(out)])
        assert r.exit_code == 0, r.output
        s = json.loads(r.stdout)
        assert s["status"] == "partial" and s["locked_aois"] == ["aoi1"]
        assert [a["status"] for a in s["aois"]] == ["locked", "ok"]
        assert r.stderr.strip().splitlines() == [
            "Warning: skipped AOI(s) aoi1: locked by another geoseg monitor run, which is processing them; every "
            "other AOI is done (exit code 0)."]
        assert (out / "aoi2" / "state.tif").exists() and not (out / "aoi1" / "state.tif").exists()
        with _held(out / "aoi2" / ".lock"):  # every AOI locked: this run did nothing -> 75
            r = runner.invoke(cli, ["monitor", "run", str(cfg), "-o", str(out)])
            assert r.exit_code == 75, r.output
            assert json.loads(r.stdout)["status"] == "locked"
            assert "Error: locked by another run: aoi1, aoi2" in r.stderr
    r = runner.invoke(cli, ["monitor", "run", str(cfg), "-o", str(out)])  # the "other run" ended: it catches up
    assert r.exit_code == 0 and r.stderr == "", r.output
    s = json.loads(r.stdout)
    assert [a["status"] for a in s["aois"]] == ["ok", "nothing new"] and s["status"] == "ok"
    assert not (tmp_path / "out").exists()  # --output replaced the config's folder


def test_monitor_output_option_keeps_the_example_out_of_the_source_tree():
    """The README's command passes -o; the shipped config's own folder is git-ignored (for deployment copies)."""
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text()
    assert "geoseg monitor run workflows/monitor/monitor.yaml -o monitor-output/" in readme
    assert "/monitor-output/" in (root / ".gitignore").read_text().splitlines()
    assert "/output/" in (root / "workflows" / "monitor" / ".gitignore").read_text().splitlines()
