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

    def full(journal_dir, index, data, meta):
        calls.append(index)
        raise OSError(errno.ENOSPC, "No space left on device")
        return real(journal_dir, index, data, meta)

    real = tasks.write_block_file
    monkeypatch.setattr(tasks, "write_block_file", full)
    out = tmp_path / "out"
    _one_line(_predict(runner, scene_path, linear_model, out), 5, f"the disk of {out} is full", "then rerun")
    assert calls
    # nothing at a final path, no temporaries (a block finished before would stay in the journal for the rerun)
    assert set(os.listdir(out)) <= {".geoseg.lock", ".geoseg-journal"}
    monkeypatch.setattr(tasks, "write_block_file", real)
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
    assert set(os.listdir(out)) <= {".geoseg.lock", ".geoseg-journal"}  # the blocks stay for a rerun


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
    assert set(os.listdir(out)) <= {".geoseg.lock", ".geoseg-journal"}  # nothing final; finished blocks kept
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_fs)], check=True)  # space freed: rerun
    r = _predict(runner, scene, linear_model, out, "--confidence")
    assert r.exit_code == 0, r.output
    assert {"landcover.tif", "probabilities.tif", "confidence.tif", "run.json"} <= set(os.listdir(out))


# -- a lost worker -------------------------------------------------------------------------------------------


def _dies_once(marker: str, x: int) -> int:
    """A task whose first run kills its worker process (as the out-of-memory killer would)."""
    if x == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x * 10


def test_a_lost_worker_is_a_warning_and_its_tasks_are_rerun(tmp_path):
    distributed = pytest.importorskip("distributed")
    from dask.delayed import delayed

    from geoseg._util.execution import execute
    from geoseg._util.progress import NullProgress

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        tasks = [delayed(_dies_once)(str(tmp_path / "died"), i, dask_key_name=f"t-{i}") for i in range(6)]
        with pytest.warns(RuntimeWarning, match=r"1 dask worker\(s\) of tcp://.* were lost during the run .*"
                                                r"reran their [1-9]\d* assigned task\(s\) elsewhere"):
            results = execute(tasks, cluster.scheduler_address, 2, NullProgress(), {})
    assert results == [0, 10, 20, 30, 40, 50] and (tmp_path / "died").exists()


def test_lost_worker_events_count_only_unexpected_removals_of_this_run():
    from geoseg._util.execution import lost_workers

    events = [(5.0, {"action": "remove-worker", "worker": "tcp://a:1", "processing-tasks": {"x": 1}}),  # before
              (11.0, {"action": "add-worker", "worker": "tcp://c:3"}),
              (12.0, {"action": "remove-worker", "worker": "tcp://b:2", "processing-tasks": {"y": 1, "z": 2},
                      "expected": False}),
              (13.0, {"action": "remove-worker", "worker": "tcp://c:3", "processing-tasks": {}, "expected": True})]
    assert lost_workers(events, since=10.0) == (["tcp://b:2"], 2)


# -- off a terminal: summaries and --log -----------------------------------------------------------------------


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_summary_line_off_a_terminal_and_a_json_log_line(runner, tmp_path, scene_path, linear_model):
    out, log = tmp_path / "out", tmp_path / "runs.jsonl"
    r = _predict(runner, scene_path, linear_model, out, "--log", str(log))
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"geoseg predict: {scene_path}: done -> {out}/landcover.tif in ")
    assert "; 100.0 % valid; " in line and "trees" in line and "water" in line and "built" in line
    (rec,) = _log(log)
    assert rec["command"] == "predict" and rec["scene"] == str(scene_path) and rec["status"] == "done"
    assert rec["output"] == f"{out}/landcover.tif" and rec["valid_percent"] == 100.0 and rec["seconds"] > 0
    assert set(rec["classes"]) == {"water", "trees", "built"} and abs(sum(rec["classes"].values()) - 100) < 0.2
    # --quiet: nothing on stderr, the log still gets its line; a failure is logged with its exit code
    r = _predict(runner, scene_path, linear_model, tmp_path / "q", "--quiet", "--log", str(log))
    assert r.exit_code == 0 and r.stderr == "", r.output
    r = _predict(runner, tmp_path / "missing.tif", linear_model, tmp_path / "m", "--quiet", "--log", str(log))
    _one_line(r, 3, "missing.tif")
    assert [(x["status"], x.get("exit_code")) for x in _log(log)] == [("done", None), ("done", None), ("failed", 3)]
    assert _log(log)[-1]["error"].startswith("InputFileError: ")


def test_an_unwritable_log_is_refused_before_any_work(runner, tmp_path, scene_path, linear_model):
    out = tmp_path / "out"
    _one_line(_predict(runner, scene_path, linear_model, out, "--log", str(tmp_path / "no" / "such" / "log")), 5,
              "cannot write the log", "--log FILE")
    assert not out.exists()


def _damaged(path: Path) -> Path:
    """A GeoTIFF whose header is fine but whose middle tiles are garbage: it opens, its pixels do not decode."""
    from geoseg.testing import BANDS4, pattern_scene

    scene, _ = pattern_scene(300, 300)
    write_raster(path, scene, descriptions=BANDS4)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(np.random.default_rng(1).integers(0, 255, size // 3, dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_a_damaged_scene_is_one_line_exit_3_on_any_scheduler(runner, tmp_path, linear_model, scheduler):
    """A read error in a worker (also a worker process: rasterio's errors do not unpickle) is a clear error."""
    bad = _damaged(tmp_path / "damaged.tif")
    out = tmp_path / "out"
    _one_line(_predict(runner, bad, linear_model, out, "--scheduler", scheduler), 3, f"{bad}: cannot read the scene",
              "TIFFReadEncodedTile", "copy or download it again")
    assert sorted(os.listdir(out)) == [".geoseg.lock"]


def test_batch_faults_stay_with_their_scene_every_scene_logged_and_a_rerun_completes(runner, tmp_path,
                                                                                    linear_model):
    """A good raster, a damaged one and an ItemCollection whose second Item lacks a band file on disk."""
    from geoseg.testing import BANDS4
    from geoseg.testing_sources import write_reference, write_stac_item

    (tmp_path / "in").mkdir()
    good = write_raster(tmp_path / "in" / "good.tif", np.full((4, 50, 60), 1100, np.uint16), descriptions=BANDS4)
    bad = _damaged(tmp_path / "in" / "damaged.tif")
    ref = write_reference(tmp_path / "ref.tif", size=60)
    items = []
    for d in ("a", "b"):
        item = json.loads(write_stac_item(tmp_path / "stac" / d, ref).read_text())
        item["id"] = f"S2_{d}"
        for asset in item["assets"].values():
            asset["href"] = f"./{d}/" + asset["href"][2:]
        items.append(item)
    (tmp_path / "stac" / "search.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    gone = tmp_path / "stac" / "b" / "B04.tif"
    gone.rename(gone.with_suffix(".away"))
    out, log = tmp_path / "out", tmp_path / "batch.jsonl"
    args = ["predict", str(good), str(bad), str(tmp_path / "stac" / "search.json"), "-m", str(linear_model),
            "-o", str(out), "--tile-size", "64", "--workers", "1", "--log", str(log)]
    r = runner.invoke(cli, args)
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("[1/4] good: done -> ") and "100.0 % valid" in lines[0]
    assert lines[1].startswith("[2/4] damaged: FAILED UnreadableBandError: ") and "copy or download" in lines[1]
    assert lines[2].startswith("[3/4] S2_a: done -> ")
    assert lines[3].startswith("[4/4] S2_b: FAILED ") and "B04" in lines[3]
    assert lines[4].startswith("geoseg predict: 2 done, 0 skipped, 2 failed") and lines[5].startswith("Error: ")
    assert [(x["scene"], x["status"], x.get("exit_code")) for x in _log(log)] == [
        ("good", "done", None), ("damaged", "failed", 3), ("S2_a", "done", None), ("S2_b", "failed", 3)]
    for sid in ("damaged", "S2_b"):  # nothing partial where a scene failed
        assert not (out / sid).exists() or sorted(os.listdir(out / sid)) == [".geoseg.lock"]
    write_raster(bad, np.full((4, 40, 40), 1100, np.uint16), descriptions=BANDS4)  # fixed, and the band is back
    gone.with_suffix(".away").rename(gone)
    r = runner.invoke(cli, [*args, "--retry-failed"])
    assert r.exit_code == 0, r.output
    assert "geoseg predict: 2 done, 2 skipped, 0 failed" in r.stderr  # the Items' scenes are skipped too
    assert [(x["scene"], x["status"]) for x in _log(log)[4:]] == [
        ("good", "skipped"), ("damaged", "done"), ("S2_a", "skipped"), ("S2_b", "done")]
    assert all((out / sid / "landcover.tif").exists() for sid in ("good", "damaged", "S2_a", "S2_b"))


def _kills_its_process(x: int) -> int:
    os._exit(9)


def test_a_killed_local_worker_process_is_exit_71_not_a_traceback():
    from dask.delayed import delayed

    from geoseg._util.execution import execute
    from geoseg._util.progress import NullProgress
    from geoseg.errors import WorkerLostError

    with pytest.raises(WorkerLostError, match=r"worker process was killed .* lower --workers \(1\)") as info:
        execute([delayed(_kills_its_process)(1)], "processes", 1, NullProgress(), {})
    assert info.value.exit_code == 71 and info.value.__context__ is None


# -- the client killed while its workers run ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_predict_killed_mid_run_leaves_nothing_final_and_a_rerun_completes(tmp_path, linear_model, sig):
    """SIGTERM (a scheduler's timeout): exit 143, one line, temporaries removed, worker processes ended.  SIGKILL:
    nothing can clean up, but nothing is at a final path, and the rerun removes the leftovers and completes."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from geoseg.testing import BANDS4, pattern_scene

    scene, _ = pattern_scene(2048, 2048)  # 64 blocks: the first finished block is early in the run
    src = write_raster(tmp_path / "scene.tif", scene, descriptions=BANDS4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from geoseg.cli import main; main()", "predict", str(src), "-m", str(linear_model),
           "-o", str(out), "--tile-size", "64", "--block-size", "256", "--scheduler", "processes", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    workers: list = []
    while time.time() < deadline and proc.poll() is None and not (
            workers and list(out.glob(".geoseg-journal/*/block-*.tif"))):
        workers = psutil.Process(proc.pid).children(recursive=True)  # the worker processes have started
        time.sleep(0.05)
    assert proc.poll() is None and workers, "the run ended before its workers started"
    # a block is durable: tiles are predicted, blocks are being written
    os.kill(proc.pid, getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive  # no orphan keeps writing
    assert not (out / "landcover.tif").exists() and not (out / "run.json").exists()
    if sig == "SIGTERM":
        assert proc.returncode == 143 and err.strip().splitlines()[-1] == "Terminated: no output was written.", err
        assert set(os.listdir(out)) <= {".geoseg.lock", ".geoseg-journal"}  # finished blocks kept for the rerun
    r = subprocess.run(cmd[:-4] + ["--workers", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p for p in os.listdir(out) if p.startswith(".")) == [".geoseg.lock"]  # leftovers removed
    assert (out / "landcover.tif").exists()


def test_a_missing_scene_in_a_list_fails_alone_and_runs_once_it_is_there(runner, tmp_path, linear_model):
    from geoseg.testing import BANDS4

    (tmp_path / "in").mkdir()
    write_raster(tmp_path / "in" / "a.tif", np.full((4, 40, 40), 1100, np.uint16), descriptions=BANDS4)
    (tmp_path / "in" / "scenes.txt").write_text("a.tif\nlate.tif\n")
    out = tmp_path / "out"
    args = ["predict", f"@{tmp_path / 'in' / 'scenes.txt'}", "-m", str(linear_model), "-o", str(out)]
    r = runner.invoke(cli, args)
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("[1/2] a: done") and lines[1].startswith("[2/2] late: FAILED InputFileError: ")
    assert "late.tif" in lines[1] and "Traceback" not in r.output
    assert (out / "a" / "landcover.tif").exists() and not (out / "late" / "landcover.tif").exists()
    write_raster(tmp_path / "in" / "late.tif", np.full((4, 40, 40), 1100, np.uint16), descriptions=BANDS4)
    r = runner.invoke(cli, args)  # no --retry-failed needed: the scene's files changed (it appeared)
    assert r.exit_code == 0, r.output
    assert "1 done, 1 skipped, 0 failed" in r.stderr and (out / "late" / "landcover.tif").exists()
