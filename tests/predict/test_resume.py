"""Resume inside a scene: a run killed part-way continues from its finished blocks (the block journal) to COGs
byte-identical to an uninterrupted run's; a changed input or option never mixes with an earlier run's blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import geoseg.predict.graph
from geoseg import predict_scene
from geoseg.io.journal import JOURNAL
from geoseg.testing import BANDS4, pattern_scene, write_raster

RASTERS = ("landcover.tif", "probabilities.tif", "confidence.tif")
OPTIONS = dict(block_size=256, probabilities=True, confidence=True, tile_size=64, overlap=16)

#: A run that is SIGKILLed (no cleanup of any kind) once ``stop_after`` of its blocks are in the journal.
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, warnings
    import geoseg.predict.graph as graph
    from geoseg import predict_scene
    scene, model, out, stop_after = sys.argv[1:5]
    original = graph.blend_and_write
    def blend_and_write(spec, block, *parts):
        result = original(spec, block, *parts)
        if sum(f.startswith("block-") for f in os.listdir(spec.journal_dir)) >= int(stop_after):
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    graph.blend_and_write = blend_and_write
    warnings.simplefilter("ignore")
    predict_scene(scene, model, out, scheduler="synchronous", block_size=256, probabilities=True,
                  confidence=True, tile_size=64, overlap=16)
""")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    data, _ = pattern_scene(600, 700)  # 3 x 3 blocks of 256
    return write_raster(tmp / "s.tif", data, descriptions=BANDS4)


@pytest.fixture(scope="module")
def reference(scene, linear_model, tmp_path_factory):
    """The uninterrupted run's rasters, as bytes."""
    out = tmp_path_factory.mktemp("reference")
    predict_scene(scene, linear_model, out, **OPTIONS)
    return {name: (out / name).read_bytes() for name in RASTERS}


def _count_blocks(monkeypatch) -> list[int]:
    """Record the block index of every block task the graph runs."""
    calls: list[int] = []
    original = geoseg.predict.graph.blend_and_write

    def counted(spec, block, *parts):
        calls.append(block.index)
        return original(spec, block, *parts)

    monkeypatch.setattr(geoseg.predict.graph, "blend_and_write", counted)
    return calls


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sigkilled_run_resumes_from_its_blocks_to_identical_cogs(tmp_path, scene, linear_model, reference,
                                                                 monkeypatch):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(scene), str(linear_model), str(out), "5"],
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (out / "landcover.tif").exists()
    journal = [f.name for d in (out / JOURNAL).iterdir() for f in d.iterdir()]
    assert sum(n.startswith("block-") for n in journal) == 5 and "manifest.json" in journal

    calls = _count_blocks(monkeypatch)
    r = predict_scene(scene, linear_model, out, **OPTIONS)  # threads this time: the scheduler is no part of it
    assert r.extra["resumed_blocks"] == 5
    assert sorted(calls) == sorted(set(range(9)) - {int(n[6:12]) for n in journal if n.startswith("block-")})
    for name in RASTERS:
        assert (out / name).read_bytes() == reference[name], name
    assert not (out / JOURNAL).exists()  # published: the journal is gone
    assert not [n for n in os.listdir(out) if ".part." in n or ".cog." in n]


def _crash_after(monkeypatch, n: int) -> None:
    """Block tasks fail once ``n`` blocks are written (an ordinary exception: the run unwinds, blocks stay)."""
    original = geoseg.predict.graph.blend_and_write
    done: list[int] = []

    def crashing(spec, block, *parts):
        if len(done) >= n:
            raise RuntimeError("simulated crash")
        done.append(block.index)
        return original(spec, block, *parts)

    monkeypatch.setattr(geoseg.predict.graph, "blend_and_write", crashing)


@pytest.mark.filterwarnings("ignore:model test-linear is untrained")
def test_changed_option_or_input_discards_the_journal(tmp_path, scene, linear_model, reference, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _crash_after(m, 4)
        with pytest.raises(RuntimeError, match="simulated"):
            predict_scene(scene, linear_model, out, scheduler="synchronous", **OPTIONS)
    assert (out / JOURNAL).is_dir()  # kept for a rerun
    with pytest.warns(UserWarning, match=r"4 finished blocks .* other options: discarded"):
        r = predict_scene(scene, linear_model, out, **{**OPTIONS, "blend": "linear"})
    assert r.extra["resumed_blocks"] == 0
    fresh = predict_scene(scene, linear_model, tmp_path / "fresh", **{**OPTIONS, "blend": "linear"})
    assert (out / "landcover.tif").read_bytes() == (tmp_path / "fresh" / "landcover.tif").read_bytes()
    assert fresh.extra["resumed_blocks"] == 0

    # a changed input file (same name, new content): never a mix of the old scene's blocks with the new one's
    other = tmp_path / "in"
    data, _ = pattern_scene(600, 700)
    src = write_raster(tmp_path / "in.tif", data, descriptions=BANDS4)
    with monkeypatch.context() as m:
        _crash_after(m, 3)
        with pytest.raises(RuntimeError):
            predict_scene(src, linear_model, other, scheduler="synchronous", **OPTIONS)
    write_raster(src, np.flip(data, axis=2).copy(), descriptions=BANDS4)
    os.utime(src, ns=(1, 1))
    with pytest.warns(UserWarning, match="other scene: discarded"):
        r = predict_scene(src, linear_model, other, **OPTIONS)
    assert r.extra["resumed_blocks"] == 0
    with pytest.warns(UserWarning, match="untrained"):
        flipped = predict_scene(src, linear_model, tmp_path / "flipped", **OPTIONS)
    assert (other / "landcover.tif").read_bytes() == (tmp_path / "flipped" / "landcover.tif").read_bytes()
    assert flipped.landcover


@pytest.mark.filterwarnings("ignore:model test-linear is untrained")
def test_no_resume_starts_afresh(tmp_path, scene, linear_model, reference, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(RuntimeError):
            predict_scene(scene, linear_model, out, scheduler="synchronous", **OPTIONS)
    calls = _count_blocks(monkeypatch)
    r = predict_scene(scene, linear_model, out, resume=False, **OPTIONS)
    assert r.extra["resumed_blocks"] == 0 and sorted(calls) == list(range(9))
    assert (out / "landcover.tif").read_bytes() == reference["landcover.tif"]


@pytest.mark.filterwarnings("ignore:model test-linear is untrained")
def test_a_resumed_run_profiles_only_the_tasks_it_ran(tmp_path, scene, linear_model, monkeypatch):
    predict_scene(scene, linear_model, tmp_path / "full", profile=True, **OPTIONS)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _crash_after(m, 4)
        with pytest.raises(RuntimeError, match="simulated"):
            predict_scene(scene, linear_model, out, scheduler="synchronous", profile=True, **OPTIONS)
    resumed = predict_scene(scene, linear_model, out, profile=True, **OPTIONS)
    assert resumed.extra["resumed_blocks"] == 4
    tasks_full = json.loads((tmp_path / "full" / "run.json").read_text())["profile"]["tasks"]
    tasks_resumed = json.loads((out / "run.json").read_text())["profile"]["tasks"]
    assert 0 < tasks_resumed <= tasks_full - 4  # at least the 4 reused block tasks fewer
