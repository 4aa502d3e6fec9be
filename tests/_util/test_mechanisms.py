"""The shared mechanisms: atomic write, file lock, block layout, execution checks, the run skeleton."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from geoseg._util.atomic import atomic_path, atomic_write, atomic_write_text, publish, temp_path
from geoseg._util.execution import check_execution, check_scheduler, default_workers
from geoseg._util.lock import file_lock
from geoseg.errors import OutputError, OutputExistsError, OutputLockedError, ParameterError
from geoseg.io.grid import BlockGrid, check_block_size, plan_blocks
from geoseg.io.run import RunFolder


def test_temp_path_is_hidden_beside_and_keeps_the_extension(tmp_path):
    t = temp_path(tmp_path / "landcover.tif")
    assert t.parent == tmp_path and t.name.startswith(".landcover.tif.") and t.suffix == ".tif"
    assert temp_path(tmp_path / "a.tif") != temp_path(tmp_path / "a.tif")


def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["x.json"]  # the temporary is gone
    atomic_write(target, lambda p: Path(p).write_text("new"))
    assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["x.json"]


def test_atomic_write_refuses_without_overwrite_and_names_the_fix(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("keep")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        atomic_write_text(target, "new", overwrite=False)
    with pytest.raises(OutputError, match="cannot write .*; choose another folder"):
        atomic_write_text(tmp_path / "missing" / "x.txt", "new", hint="choose another folder")
    assert target.read_text() == "keep"


def test_publish_never_replaces_a_file_created_meanwhile(tmp_path):
    tmp, final = tmp_path / ".x.tmp", tmp_path / "x.gpkg"
    tmp.write_text("new")
    final.write_text("another run's")
    with pytest.raises(OutputExistsError, match="created by another run meanwhile; pass --overwrite"):
        publish(tmp, final, replace=False)
    assert final.read_text() == "another run's"
    publish(tmp, final, replace=True)
    assert final.read_text() == "new" and not tmp.exists()
    tmp.write_text("third")
    publish(tmp, tmp_path / "y.gpkg", replace=False)
    assert (tmp_path / "y.gpkg").read_text() == "third" and not tmp.exists()


@pytest.mark.slow
def test_file_lock_excludes_another_process_and_dies_with_it(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from geoseg._util.lock import file_lock
        with file_lock({str(lock)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match="busy"), file_lock(lock, wait=False,
                                                                      busy=lambda: OutputLockedError("busy")):
            pass
    finally:
        holder.kill()
        holder.wait()
    with file_lock(lock, wait=False):  # a killed holder leaves no stale lock
        pass


def test_block_size_rule_and_layout_cover_the_raster_once():
    assert check_block_size(512) == 512 and check_block_size(100, align=1) == 100
    with pytest.raises(ParameterError, match="multiple of 256.*--block-size 512"):
        check_block_size(300)
    with pytest.raises(ParameterError, match="positive"):
        check_block_size(0, align=1)
    grid = BlockGrid(700, 1030, 256)
    cover = np.zeros((700, 1030), np.int32)
    for w in grid.windows():
        cover[w.row_off:w.row_end, w.col_off:w.col_end] += 1
    assert (cover == 1).all() and len(grid) == grid.n_rows * grid.n_cols == 3 * 5
    assert [b.window for b in plan_blocks(700, 1030, 256)] == grid.windows()


def test_execution_options_are_checked_once():
    assert check_execution("threads", None).workers == default_workers()
    assert check_scheduler("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    with pytest.raises(ParameterError, match="unknown scheduler 'gpu'"):
        check_execution("gpu", 2)
    with pytest.raises(ParameterError, match="--workers 0 must be >= 1"):
        check_execution("threads", 0)


def test_run_folder_publishes_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with RunFolder(out, ["a.txt", "b.txt"], overwrite=False) as run:
        run.temp("a.txt").write_text("A")
        run.temp("b.txt").write_text("B")
        assert not (out / "a.txt").exists()
        run.publish()
    assert (out / "a.txt").read_text() == "A" and (out / "b.txt").read_text() == "B"
    with pytest.raises(OutputExistsError, match="a.txt.*--overwrite"):
        RunFolder(out, ["a.txt"], overwrite=False)
    cleaned = []
    with pytest.raises(RuntimeError), RunFolder(out, ["a.txt", "b.txt"], overwrite=True) as run:
        run.temp("a.txt").write_text("A2")
        run.work_dir("scratch").mkdir()
        run.on_failure(lambda: cleaned.append(True))
        raise RuntimeError("crash before publishing")
    assert (out / "a.txt").read_text() == "A" and cleaned == [True]
    assert sorted(os.listdir(out)) == [".geoseg.lock", "a.txt", "b.txt"]


def test_run_folder_lock_refuses_a_second_run(tmp_path):
    with (RunFolder(tmp_path, ["a.txt"], overwrite=True), pytest.raises(OutputLockedError, match="another geoseg run"),
          RunFolder(tmp_path, ["a.txt"], overwrite=True)):
        pass
