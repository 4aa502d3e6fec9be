"""``geoseg predict A B C -o OUT``: one folder per scene, a run index, reruns that skip what is done, failures
that do not stop the others, ItemCollections and @lists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.predict.batch import expand_scenes, is_batch, predict_batch
from geoseg.testing import BANDS4, pattern_scene, write_raster


def _scenes(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        scene, _ = pattern_scene(60 + 10 * i, 50)  # different sizes: each scene keeps its own grid
        out.append(str(write_raster(folder / f"S2_2021010{i + 1}.tif", scene, descriptions=BANDS4)))
    return out


def _index(out):
    return json.loads((out / "index.json").read_text())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_batch_predicts_each_scene_and_a_rerun_skips_them(tmp_path, linear_model):
    paths = _scenes(tmp_path / "in")
    out = tmp_path / "out"
    res = predict_batch(paths, linear_model, out, progress=False)
    assert res.done == ["S2_20210101", "S2_20210102", "S2_20210103"] and not res.failed
    for sid, p in zip(res.done, paths):
        single = tmp_path / f"single-{sid}"
        from geoseg import predict_scene

        predict_scene(p, linear_model, single, progress=False)
        with rasterio.open(out / sid / "landcover.tif") as a, rasterio.open(single / "landcover.tif") as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))  # each scene on its own grid, as alone
    idx = _index(out)
    assert {k: v["status"] for k, v in idx["scenes"].items()} == dict.fromkeys(res.done, "done")
    before = (out / "S2_20210101" / "landcover.tif").stat().st_mtime_ns
    again = predict_batch(paths, linear_model, out, progress=False)
    assert again.done == [] and again.skipped == res.done
    assert (out / "S2_20210101" / "landcover.tif").stat().st_mtime_ns == before
    # a changed input is not skipped (and needs --overwrite to replace its folder's outputs)
    os.utime(paths[1], ns=(before + 10**9, before + 10**9))
    third = predict_batch(paths, linear_model, out, progress=False, overwrite=True)
    assert third.done == ["S2_20210102"] and third.skipped == ["S2_20210101", "S2_20210103"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_failing_scene_does_not_stop_the_others_and_exit_3(tmp_path, linear_model):
    paths = _scenes(tmp_path / "in")
    bad = tmp_path / "in" / "S2_20210109.tif"
    bad.write_bytes(b"not a tiff")
    (tmp_path / "in" / "scenes.txt").write_text(  # paths relative to the list, comments allowed
        "# the inventory\n" + "\n".join(os.path.basename(p) for p in paths[:2]) + "\nS2_20210109.tif  # new\n")
    res = CliRunner().invoke(cli, ["predict", f"@{tmp_path / 'in' / 'scenes.txt'}", "-m", str(linear_model),
                                   "-o", str(tmp_path / "out")])
    assert res.exit_code == 3, res.output
    assert "Traceback" not in res.output
    assert "2 done, 0 skipped, 1 failed" in res.output and "S2_20210109" in res.output
    idx = _index(tmp_path / "out")
    assert idx["scenes"]["S2_20210109"]["status"] == "failed"
    assert "not a readable raster" in idx["scenes"]["S2_20210109"]["error"]
    assert (tmp_path / "out" / "S2_20210101" / "landcover.tif").exists()
    # fixed, and rerun with --retry-failed: only that scene runs
    scene, _ = pattern_scene(40, 40)
    write_raster(bad, scene, descriptions=BANDS4)
    res = CliRunner().invoke(cli, ["predict", f"@{tmp_path / 'in' / 'scenes.txt'}", "-m", str(linear_model),
                                   "-o", str(tmp_path / "out"), "--retry-failed"])
    assert res.exit_code == 0, res.output
    assert "1 done, 2 skipped, 0 failed" in res.output


def test_an_item_collection_is_one_scene_per_item(tmp_path):
    from geoseg.testing_sources import write_reference, write_stac_item

    ref = write_reference(tmp_path / "ref.tif", size=60)
    items = [json.loads(write_stac_item(tmp_path / d, ref).read_text()) for d in ("a", "b")]
    for d, item in zip(("a", "b"), items):
        item["id"] = f"S2_{d}"
        for asset in item["assets"].values():
            asset["href"] = f"./{d}/" + asset["href"][2:]
    coll = tmp_path / "search.json"
    coll.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    assert is_batch([str(coll)]) and not is_batch([str(ref)])
    scenes = expand_scenes([str(coll)], tmp_path / "out" / ".items")
    assert [s.id for s in scenes] == ["S2_a", "S2_b"]
    staged = json.loads(Path(scenes[1].path).read_text())
    assert staged["assets"]["blue"]["href"] == str((tmp_path / "b" / "B02.tif").resolve())


def test_missing_scenes_and_empty_globs_are_refused_before_any_work(tmp_path, linear_model):
    res = CliRunner().invoke(cli, ["predict", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-m",
                                   str(linear_model), "-o", str(tmp_path / "out")])
    assert res.exit_code == 3 and "does not exist" in res.output
    res = CliRunner().invoke(cli, ["predict", str(tmp_path / "*.tif"), "-m", str(linear_model), "-o",
                                   str(tmp_path / "out")])
    assert res.exit_code == 3 and "no scene matches" in res.output
    assert not (tmp_path / "out" / "index.json").exists()
