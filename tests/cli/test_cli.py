"""The CLI through click's runner: the happy path and every bad input of the prediction issue."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.testing import BANDS4, pattern_scene, write_raster


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def scene_path(tmp_path):
    scene, _ = pattern_scene(120, 150)
    return write_raster(tmp_path / "scene.tif", scene, descriptions=BANDS4)


def _one_line_error(result, code, *needles):
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    out = result.output.strip()
    assert len(out.splitlines()) == 1, out
    assert out.startswith("Error: ") and "Traceback" not in out
    for n in needles:
        assert n in out, out
    return out


def test_predict_happy_path(runner, tmp_path, scene_path, linear_model):
    out = tmp_path / "out"
    r = runner.invoke(cli, ["predict", str(scene_path), "--model", str(linear_model), "-o", str(out),
                            "--probabilities", "--confidence", "--tile-size", "64", "--overlap", "32",
                            "--blend", "linear", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert r.stdout == ""  # not a terminal: no table, one summary line on stderr (tests/cli/test_faults.py)
    assert r.stderr.startswith(f"geoseg predict: {scene_path}: done -> {out}/landcover.tif")
    assert r.stderr.count("\n") == 1
    assert sorted(os.listdir(out)) == sorted([
        "confidence.tif", "landcover.tif", "probabilities.tif", "run.json", "landcover.qml", "confidence.qml",
        "probabilities.qml", "landcover.tif.aux.xml", "quicklook.png", "report.html", "item.json", ".geoseg.lock"])
    rec = json.loads((out / "run.json").read_text())
    assert rec["options"]["blend"] == "linear" and rec["options"]["overlap"] == 32
    assert sum(rec["class_pixels"].values()) == 120 * 150
    with rasterio.open(out / "probabilities.tif") as src:
        assert src.count == 3 and src.descriptions == ("water", "trees", "built")
        assert src.scales == (0.01, 0.01, 0.01)


def test_predict_summary_names_the_polygons(capsys):
    from types import SimpleNamespace

    from geoseg.cli.predict import print_summary

    result = SimpleNamespace(class_pixels={"water": 3, "trees": 1}, landcover="o/landcover.tif", tiles=2, seconds=1.0,
                             trained_model=True, pixel_area_m2=100.0, nodata_pixels=0, cloud_pixels=0,
                             extra={"vector": "o/landcover.gpkg", "vector_features": 7})
    print_summary(result)
    out = capsys.readouterr().out
    assert "water" in out and out.strip().endswith("wrote 7 polygons to o/landcover.gpkg")


def test_missing_file(runner, tmp_path, linear_model):
    r = runner.invoke(cli, ["predict", str(tmp_path / "nope.tif"), "-m", str(linear_model), "-o", str(tmp_path / "o")])
    _one_line_error(r, 3, "does not exist")


def test_not_a_raster(runner, tmp_path, linear_model):
    p = tmp_path / "notes.tif"
    p.write_text("hello")
    r = runner.invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "o")])
    _one_line_error(r, 3, "not a readable raster")


def test_ungeoreferenced_needs_flag(runner, tmp_path, linear_model):
    scene, cls = pattern_scene(60, 70)
    p = write_raster(tmp_path / "plain.tif", scene, crs=None, descriptions=BANDS4)
    r = runner.invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "o")])
    _one_line_error(r, 3, "no CRS", "--allow-ungeoreferenced")
    assert not (tmp_path / "o" / "landcover.tif").exists()
    r = runner.invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "o"),
                            "--allow-ungeoreferenced"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "o" / "landcover.tif") as src:
        np.testing.assert_array_equal(src.read(1), cls)


def test_band_mismatch(runner, tmp_path, linear_model):
    scene, _ = pattern_scene(40, 40)
    p = write_raster(tmp_path / "three.tif", scene[:3])
    r = runner.invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "o")])
    _one_line_error(r, 3, "3 unnamed bands", "--bands")
    r = runner.invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "o"),
                            "--bands", "1,2,3,9"])
    _one_line_error(r, 3, "out of range")
    r = runner.invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "o"), "--bands", "1,x"])
    assert r.exit_code == 2 and "band numbers" in r.output


def test_all_nodata_scene(runner, tmp_path, linear_model):
    p = write_raster(tmp_path / "empty.tif", np.zeros((4, 50, 50), np.uint16), nodata=0, descriptions=BANDS4)
    r = runner.invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "o")])
    _one_line_error(r, 3, "no valid pixel")
    assert os.listdir(tmp_path / "o") == [".geoseg.lock"]


def test_output_exists_and_overwrite(runner, tmp_path, scene_path, linear_model):
    args = ["predict", str(scene_path), "-m", str(linear_model), "-o", str(tmp_path / "o")]
    assert runner.invoke(cli, args).exit_code == 0
    _one_line_error(runner.invoke(cli, args), 5, "already exists", "--overwrite")
    assert runner.invoke(cli, args + ["--overwrite"]).exit_code == 0


def test_unwritable_output(runner, tmp_path, scene_path, linear_model):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    r = runner.invoke(cli, ["predict", str(scene_path), "-m", str(linear_model), "-o", str(blocker)])
    _one_line_error(r, 5, "not a directory")
    r = runner.invoke(cli, ["predict", str(scene_path), "-m", str(linear_model), "-o", str(blocker / "sub")])
    _one_line_error(r, 5, "cannot write")


def test_bad_options(runner, tmp_path, scene_path, linear_model, unet_model):
    base = ["predict", str(scene_path), "-o", str(tmp_path / "o")]
    _one_line_error(runner.invoke(cli, base + ["-m", str(unet_model), "--tile-size", "100"]), 2, "tile size 100")
    _one_line_error(runner.invoke(cli, base + ["-m", str(unet_model), "--overlap", "30"]), 2, "overlap 30")
    _one_line_error(runner.invoke(cli, base + ["-m", str(linear_model), "--scheduler", "mpi"]), 2, "tcp://")
    _one_line_error(runner.invoke(cli, base + ["-m", str(linear_model), "--device", "tpu"]), 2, "unknown device")
    r = runner.invoke(cli, base + ["-m", str(linear_model), "--blend", "hann"])
    assert r.exit_code == 2 and "cosine" in r.output
    # vector options are checked before any inference, and only apply with --vector
    _one_line_error(runner.invoke(cli, base + ["-m", str(linear_model), "--vector", "gpkg", "--min-area", "1acre"]),
                    2, "1acre")
    _one_line_error(runner.invoke(cli, base + ["-m", str(linear_model), "--vector", "gpkg", "--simplify", "10ha"]),
                    2, "10ha")
    _one_line_error(runner.invoke(cli, base + ["-m", str(linear_model), "--min-area", "1ha"]), 2, "--vector")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_corrupt_model_packages(runner, tmp_path, scene_path, linear_model):
    import shutil

    base = ["predict", str(scene_path), "-o", str(tmp_path / "o"), "-m"]
    _one_line_error(runner.invoke(cli, base + [str(tmp_path / "none")]), 4, "not found")

    garbage = tmp_path / "garbage"
    shutil.copytree(linear_model, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x00" * 64)
    _one_line_error(runner.invoke(cli, base + [str(garbage)]), 4, "corrupt")

    badjson = tmp_path / "badjson"
    shutil.copytree(linear_model, badjson)
    (badjson / "geoseg-model.json").write_text("{not json")
    _one_line_error(runner.invoke(cli, base + [str(badjson)]), 4, "not valid JSON")

    mismatch = tmp_path / "mismatch"
    shutil.copytree(linear_model, mismatch)
    card = json.loads((mismatch / "geoseg-model.json").read_text())
    card["classes"].append({"value": 9, "name": "extra", "color": "#000000"})
    (mismatch / "geoseg-model.json").write_text(json.dumps(card))
    _one_line_error(runner.invoke(cli, base + [str(mismatch)]), 4, "do not fit")

    pickled = tmp_path / "model.pt"
    pickled.write_bytes(b"\x80\x04\x95pickle")
    _one_line_error(runner.invoke(cli, base + [str(pickled)]), 4, "safetensors")
    assert not (tmp_path / "o" / "landcover.tif").exists()


def test_model_init_and_info(runner, tmp_path, scene_path):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([{"value": 0, "name": "water", "color": "#0000FF"},
                                   {"value": 1, "name": "forest", "color": "#00AA00"}]))
    pkg = tmp_path / "M"
    r = runner.invoke(cli, ["model", "init", "--arch", "unet", "--encoder", "resnet18", "--bands", "B2,B3,B4,B8",
                            "--classes", str(classes), "--tile-size", "128", "--overlap", "64", "-o", str(pkg)])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(pkg)) == ["geoseg-model.json", "model.safetensors"]
    r = runner.invoke(cli, ["model", "info", str(pkg)])
    assert r.exit_code == 0
    assert "Unet / resnet18" in r.output and "forest" in r.output and "UNTRAINED" in r.output
    info = json.loads(runner.invoke(cli, ["model", "info", str(pkg), "--json"]).output)
    assert info["in_channels"] == 4 and info["output_stride"] == 32
    # the untrained package runs end to end
    r = runner.invoke(cli, ["predict", str(scene_path), "-m", str(pkg), "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    # refuses to overwrite; bad architecture lists the choices
    _one_line_error(runner.invoke(cli, ["model", "init", "--bands", "B2", "--classes", str(classes), "-o", str(pkg)]),
                    5, "exists")
    r = runner.invoke(cli, ["model", "init", "--arch", "resnet", "--bands", "B2", "--classes", str(classes),
                            "-o", str(tmp_path / "x")])
    _one_line_error(r, 4, "unknown architecture", "Unet", "FPN", "Segformer")


def test_single_file_package(tmp_path, scene_path, linear_model, runner):
    """A lone .safetensors with the card in its metadata is a valid package."""
    single = tmp_path / "linear.safetensors"
    single.write_bytes((linear_model / "model.safetensors").read_bytes())
    r = runner.invoke(cli, ["predict", str(scene_path), "-m", str(single), "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output


def test_saved_packages_are_readable_by_others(tmp_path, linear_model):
    import stat

    mode = os.stat(linear_model).st_mode
    assert mode & stat.S_IROTH and mode & stat.S_IXOTH
    assert os.stat(linear_model / "model.safetensors").st_mode & stat.S_IROTH
