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


# -- a full disk ---------------------------------------------------------------------------------------------


@pytest.fixture
def scene_path(tmp_path):
    from geoseg.testing import BANDS4, pattern_scene

    scene, _ = pattern_scene(120, 150)
    return write_raster(tmp_path / "scene.tif", scene, descriptions=BANDS4)


def _one_line(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _predict(runner, scene, model, out, *extra: str):
    return runner.invoke(cli, ["predict", str(scene), "-m", str(model), "-o", str(out), "--tile-size", "64",
                               "--workers", "1", "--probabilities", *extra])


def test_needed_bytes_bounds_temporaries_and_cogs():
    from geoseg.io.space import SLACK_BYTES, needed_bytes, raster_bytes

    assert raster_bytes(100, 200, 3) == 60_000 and raster_bytes(10, 10, 1, itemsize=4) == 400
    raw = 1_000_000
    # a temporary GeoTIFF and a COG with overviews (a third more) at once, uncompressed, 5 % margin, slack
    assert needed_bytes([raw]) == int(raw * (2 + 1 / 3) * 1.05) + SLACK_BYTES
    assert needed_bytes([raw, raw]) > 2 * (needed_bytes([raw]) - SLACK_BYTES)


def test_full_disk_is_refused_up_front_with_one_line_and_exit_5(runner, tmp_path, scene_path, linear_model,
                                                                 monkeypatch):
    import shutil

    import geoseg.io.space as space

    free = 1 << 20
    monkeypatch.setattr(space.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, (1 << 30) - free, free))
    out = tmp_path / "out"
    line = _one_line(_predict(runner, scene_path, linear_model, out), 5, "not enough free space", str(out),
                     "1.0 MB free", "free some space or choose another -o")
    assert "GEOSEG_SKIP_SPACE_CHECK" in line
    assert not out.exists()  # refused before any work: not even the folder
    monkeypatch.setenv("GEOSEG_SKIP_SPACE_CHECK", "1")  # the escape hatch: the check is an upper bound
    assert _predict(runner, scene_path, linear_model, out).exit_code == 0


def test_enospc_during_the_block_writes_is_one_line_and_a_rerun_completes(runner, tmp_path, scene_path,
                                                                          linear_model, monkeypatch):
    import errno

    import geoseg.predict.tasks as tasks

    calls = []

    def full(part, window, data):
        calls.append(part)
        if len(calls) > 1:  # the first block is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(part, window, data)

    real = tasks.write_block
    monkeypatch.setattr(tasks, "write_block", full)
    out = tmp_path / "out"
    _one_line(_predict(runner, scene_path, linear_model, out), 5, f"the disk of {out} is full", "then rerun")
    assert len(calls) >= 2
    assert sorted(os.listdir(out)) == [".geoseg.lock"]  # nothing partial, no temporaries
    monkeypatch.setattr(tasks, "write_block", real)
    r = _predict(runner, scene_path, linear_model, out)
    assert r.exit_code == 0, r.output
    assert {"landcover.tif", "probabilities.tif", "run.json", "item.json"} <= set(os.listdir(out))


def test_gdal_write_failure_in_the_cog_step_is_one_line(runner, tmp_path, scene_path, linear_model, monkeypatch):
    """rasterio gives no errno: 'Write failed' from GDAL is an output error too (plenty free: not 'full')."""
    from rasterio.errors import RasterioIOError

    import geoseg.io.output as output

    def failing(src, dst, *a, **k):
        open(dst, "wb").close()  # a partial COG that must be cleaned up
        raise RasterioIOError("Write failed. See previous exception for details.")

    monkeypatch.setattr(output, "to_cog", failing)
    out = tmp_path / "out"
    _one_line(_predict(runner, scene_path, linear_model, out), 5, f"writing into {out} failed (Write failed",
              "check the disk")
    assert sorted(os.listdir(out)) == [".geoseg.lock"]


def test_the_disk_error_crosses_a_worker_process_without_its_rasterio_chain():
    """dask's processes scheduler pickles an exception with tblib, chain included; rasterio's CPLE errors do not
    unpickle (an AttributeError, exit 1, instead of the error).  The translated error carries no chain."""
    import pickle

    import tblib.pickling_support
    from rasterio.errors import RasterioIOError

    from geoseg.errors import OutputError
    from geoseg.io.space import writing

    tblib.pickling_support.install()

    def write():
        try:
            raise OSError(28, "No space left on device")
        except OSError as e:
            raise RasterioIOError("Write failed. See previous exception for details.") from e

    with pytest.raises(OutputError) as info:
        writing(".", write)
    assert info.value.__context__ is None and info.value.__cause__ is None
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is type(info.value) and str(back) == str(info.value) and back.exit_code == 5


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 1 MB file system (tmpfs; needs root), unmounted afterwards; skips where it cannot mount."""
    import subprocess

    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_real_full_disk_is_one_line_exit_5_and_a_rerun_with_space_completes(runner, tmp_path, tiny_fs,
                                                                              linear_model, monkeypatch):
    import subprocess

    from geoseg.testing import BANDS4

    rng = np.random.default_rng(0)  # noise: probabilities that do not compress below 1 MB
    scene = write_raster(tmp_path / "noise.tif", rng.integers(900, 1500, size=(4, 768, 768)).astype("uint16"),
                         descriptions=BANDS4)
    out = tiny_fs / "out"
    _one_line(_predict(runner, scene, linear_model, out), 5, "not enough free space")  # the check, up front
    monkeypatch.setenv("GEOSEG_SKIP_SPACE_CHECK", "1")  # past the check: the disk fills up for real
    _one_line(_predict(runner, scene, linear_model, out, "--confidence"), 5, f"the disk of {out} is full")
    assert sorted(os.listdir(out)) == [".geoseg.lock"]
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_fs)], check=True)  # space freed: rerun
    r = _predict(runner, scene, linear_model, out, "--confidence")
    assert r.exit_code == 0, r.output
    assert {"landcover.tif", "probabilities.tif", "confidence.tif", "run.json"} <= set(os.listdir(out))
