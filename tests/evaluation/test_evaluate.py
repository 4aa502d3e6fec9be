"""geoseg.evaluate and ``geoseg evaluate``: windowed evaluation of class rasters, alignment, errors, outputs."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import EmptySceneError, InputError, InputFileError, OutputExistsError, ParameterError
from geoseg.evaluation.api import GridMismatchError, evaluate_model, evaluate_rasters, write_confusion_png, write_json
from geoseg.evaluation.metrics import ConfusionMatrix, compute_metrics, confusion_counts

CRS = "EPSG:32633"
X0, Y0, RES = 500_000.0, 5_100_000.0, 10.0


def from_origin(x0: float, y0: float, xres: float, yres: float) -> Affine:
    """North-up geotransform (rasterio's from_origin without its Affine '*' deprecation warning)."""
    return Affine(xres, 0.0, x0, 0.0, -yres, y0)


def write_class_raster(path: Path, data: np.ndarray, *, transform=None, crs: str | None = CRS,
                       nodata: float | None = None, names: dict[int, str] | None = None) -> Path:
    """A single- or multi-band raster on a 10 m UTM 33N grid (by default), with CLASS_<v> band tags."""
    if data.ndim == 2:
        data = data[None]
    count, h, w = data.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name}
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(X0, Y0, RES, RES))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if names:
            dst.update_tags(1, **{f"CLASS_{v}": n for v, n in names.items()})
    return path


def blocky_classes(h: int, w: int, seed: int, n: int = 4, cell: int = 6) -> np.ndarray:
    """Random classes in cell x cell blocks (so nearest-neighbour resampling keeps them mostly intact)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, n, (-(-h // cell), -(-w // cell)))
    return np.kron(small, np.ones((cell, cell), dtype=np.int64))[:h, :w].astype(np.uint8)


def noisy(truth: np.ndarray, seed: int, share: float = 0.3, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(truth.shape) < share, rng.integers(0, n, truth.shape), truth).astype(truth.dtype)


@pytest.fixture()
def pair(tmp_path):
    """A 150 x 170 prediction (nodata 255) and truth (nodata 200) with class names on the prediction."""
    truth = blocky_classes(150, 170, seed=1)
    pred = noisy(truth, seed=2)
    pred[:7, :] = 255  # prediction nodata
    truth[100:, 160:] = 200  # truth nodata
    truth[3:20, 10:90] = 9  # to be ignored (partly under the prediction's nodata)
    names = {0: "water", 1: "trees", 2: "built", 3: "crops", 6: "snow", 9: "unlabelled"}
    p = write_class_raster(tmp_path / "pred.tif", pred, nodata=255, names=names)
    t = write_class_raster(tmp_path / "truth.tif", truth, nodata=200)
    return p, t, pred, truth


def one_shot(pred: np.ndarray, truth: np.ndarray, ignore=(9,)) -> ConfusionMatrix:
    return confusion_counts(truth, pred, (pred != 255) & (truth != 200), ignore)


# -- windowed evaluation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size,scheduler,workers", [(32, "threads", 2), (64, "synchronous", 1),
                                                          (4096, "threads", 1)])
def test_windowed_result_equals_the_one_shot_numpy_result(pair, block_size, scheduler, workers):
    p, t, pred, truth = pair
    ev = evaluate_rasters(p, t, ignore=9, block_size=block_size, scheduler=scheduler, workers=workers)
    expected = one_shot(pred, truth)
    assert ev.metrics.confusion.reindex(expected.values) == expected
    ref = compute_metrics(expected, classes=[0, 1, 2, 3, 6])
    assert ev.metrics.miou == pytest.approx(ref.miou, abs=1e-12)
    assert ev.metrics.kappa == pytest.approx(ref.kappa, abs=1e-12)
    assert ev.nodata_pixels == int(((pred == 255) | (truth == 200)).sum())
    assert ev.ignored_pixels == int(((pred != 255) & (truth == 9)).sum())
    assert ev.metrics.pixels + ev.nodata_pixels + ev.ignored_pixels == 150 * 170


@pytest.mark.parametrize("h,w,block", [(1, 1, 5), (64, 64, 32), (65, 63, 32), (7, 300, 16)])
def test_windows_cover_every_pixel_once(h, w, block):
    from geoseg.io.grid import BlockGrid, check_block_size  # the block layout evaluate uses (any size: it only reads)

    hits = np.zeros((h, w), dtype=int)
    for win in BlockGrid(h, w, check_block_size(block, align=1)).windows():
        assert 0 < win.height <= block and 0 < win.width <= block
        hits[win.row_off:win.row_end, win.col_off:win.col_end] += 1
    assert (hits == 1).all()


def test_processes_scheduler_gives_the_same_matrix(pair):
    p, t, pred, truth = pair
    ev = evaluate_rasters(p, t, ignore=[9], block_size=64, scheduler="processes", workers=2)
    expected = one_shot(pred, truth)
    assert ev.metrics.confusion.reindex(expected.values) == expected


def test_class_names_from_tags_declared_absent_class_and_conflict_warning(pair, tmp_path):
    p, t, pred, truth = pair
    ev = evaluate_rasters(p, t, ignore=9, block_size=64)
    m = ev.metrics
    assert m.values == (0, 1, 2, 3, 6)  # 6 declared in the tags, absent from both; 9 ignored (not listed)
    assert m.by_value(1).name == "trees"
    assert math.isnan(m.by_value(6).iou)
    assert ev.warnings == ()
    # A truth whose tags name class 1 differently: names stay the prediction's, with a warning.
    t2 = write_class_raster(tmp_path / "truth2.tif", truth, nodata=200, names={1: "grass", 8: "moss"})
    ev2 = evaluate_rasters(p, t2, ignore=9, block_size=64)
    assert ev2.metrics.by_value(1).name == "trees"
    assert ev2.metrics.by_value(8).name == "moss" and ev2.metrics.by_value(8).support == 0
    assert len(ev2.warnings) == 1 and "'grass'" in ev2.warnings[0]
    # Explicit classes win over tags and define the declared list.
    ev3 = evaluate_rasters(p, t2, ignore=9, block_size=64, classes={0: "W", 1: "T", 2: "B", 3: "C"})
    assert ev3.metrics.names == ("W", "T", "B", "C")


def test_class_names_from_a_model_card(pair, tmp_path):
    from geoseg.model.card import ModelCard, Normalization, parse_classes

    card = ModelCard(id="names", architecture="PixelLinear", encoder=None, bands=("B1",),
                     classes=parse_classes([{"value": v, "name": f"k{v}"} for v in range(5)]),
                     normalization=Normalization("scale", (1.0,), (0.0,)))
    d = tmp_path / "model"
    d.mkdir()
    (d / "geoseg-model.json").write_text(card.dumps())
    p, t, _, _ = pair
    ev = evaluate_rasters(p, t, ignore=9, block_size=64, classes=str(d))
    assert ev.metrics.names == ("k0", "k1", "k2", "k3", "k4")


# -- grids and alignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("change,word", [
    ({"transform": from_origin(X0 + RES, Y0, RES, RES)}, "origin"),
    ({"transform": from_origin(X0, Y0, 20.0, 20.0)}, "pixel size"),
    ({"crs": "EPSG:32634"}, "CRS"),
    ({"shape": (50, 61)}, "size"),
])
def test_grid_mismatch_is_a_clear_error_suggesting_align(tmp_path, change, word):
    a = blocky_classes(50, 60, seed=3)
    p = write_class_raster(tmp_path / "p.tif", a)
    shape = change.pop("shape", a.shape)
    t = write_class_raster(tmp_path / "t.tif", blocky_classes(*shape, seed=4), **change)
    with pytest.raises(GridMismatchError, match="--align") as err:
        evaluate_rasters(p, t)
    assert word in str(err.value)
    assert isinstance(err.value, InputError) and err.value.exit_code == 3
    assert "\n" not in str(err.value)


def nearest_expected(pred_shape, truth: np.ndarray, tx0: float, ty0: float, tres: float):
    """Truth sampled at the prediction's pixel centres (10 m grid at X0, Y0); -1 outside the truth."""
    h, w = pred_shape
    xs = X0 + (np.arange(w) + 0.5) * RES
    ys = Y0 - (np.arange(h) + 0.5) * RES
    cols = np.floor((xs - tx0) / tres).astype(int)
    rows = np.floor((ty0 - ys) / tres).astype(int)
    out = np.full(pred_shape, -1, dtype=np.int64)
    rin = (rows >= 0) & (rows < truth.shape[0])
    cin = (cols >= 0) & (cols < truth.shape[1])
    out[np.ix_(rin, cin)] = truth[np.ix_(rows[rin], cols[cin])]
    return out


@pytest.mark.parametrize("truth_nodata", [None, 7])
def test_align_resamples_an_overlapping_truth_with_nearest_neighbour(tmp_path, truth_nodata):
    """Truth on a 20 m grid shifted by 30/50 m, covering only part of the prediction.

    Prediction pixel centres never fall on a truth pixel edge, so nearest neighbour is unambiguous
    and the expected truth per prediction pixel is computed here by plain index arithmetic.
    """
    pred = blocky_classes(60, 70, seed=5)
    tx0, ty0, tres = X0 + 30.0, Y0 - 50.0, 20.0
    truth = noisy(blocky_classes(25, 28, seed=6, cell=3), seed=7)  # 500 x 560 m: the right/bottom edges stick out
    if truth_nodata is not None:
        truth[:4, :] = truth_nodata
    p = write_class_raster(tmp_path / "p.tif", pred)
    t = write_class_raster(tmp_path / "t.tif", truth, transform=from_origin(tx0, ty0, tres, tres),
                           nodata=truth_nodata)
    with pytest.raises(GridMismatchError):
        evaluate_rasters(p, t)
    ev = evaluate_rasters(p, t, align=True, block_size=16, workers=2)
    resampled = nearest_expected(pred.shape, truth, tx0, ty0, tres)
    valid = resampled >= 0
    if truth_nodata is not None:
        valid &= resampled != truth_nodata
    expected = confusion_counts(np.where(valid, resampled, 0), pred, valid)
    assert 0 < expected.total < pred.size  # partial overlap
    assert ev.aligned
    assert ev.metrics.confusion == expected
    assert ev.nodata_pixels == pred.size - expected.total


def test_align_across_crs(tmp_path):
    """A truth that is the prediction reprojected to UTM 34N aligns back to nearly the same map."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    pred = blocky_classes(80, 80, seed=8, cell=10)
    p = write_class_raster(tmp_path / "p.tif", pred)
    src_t = from_origin(X0, Y0, RES, RES)
    with warnings.catch_warnings():  # rasterio's own Affine '*' deprecation
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        dst_t, w, h = calculate_default_transform(CRS, "EPSG:32634", 80, 80,
                                                  *rasterio.transform.array_bounds(80, 80, src_t))
    truth = np.full((h, w), 250, dtype=np.uint8)
    reproject(pred, truth, src_transform=src_t, src_crs=CRS, dst_transform=dst_t, dst_crs="EPSG:32634",
              resampling=Resampling.nearest, dst_nodata=250)
    t = write_class_raster(tmp_path / "t.tif", truth, transform=dst_t, crs="EPSG:32634", nodata=250)
    with pytest.raises(GridMismatchError, match="CRS"):
        evaluate_rasters(p, t)
    ev = evaluate_rasters(p, t, align=True, block_size=32)
    assert ev.metrics.pixels > 0.9 * pred.size
    assert ev.metrics.pixel_accuracy > 0.9  # only block edges may flip under two nearest resamplings


def test_align_without_overlap_has_no_pixel(tmp_path):
    p = write_class_raster(tmp_path / "p.tif", blocky_classes(20, 20, seed=9))
    t = write_class_raster(tmp_path / "t.tif", blocky_classes(20, 20, seed=9),
                           transform=from_origin(X0 + 10_000, Y0, RES, RES))
    with pytest.raises(EmptySceneError):
        evaluate_rasters(p, t, align=True)


# -- bad inputs ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_geoseg_errors(tmp_path):
    good = write_class_raster(tmp_path / "good.tif", blocky_classes(20, 20, seed=1))
    floats = write_class_raster(tmp_path / "float.tif", np.zeros((20, 20), dtype=np.float32))
    multi = write_class_raster(tmp_path / "multi.tif", np.zeros((3, 20, 20), dtype=np.uint8))
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("hello")
    with pytest.raises(InputFileError, match="does not exist"):
        evaluate_rasters(good, tmp_path / "missing.tif")
    with pytest.raises(InputError, match="float32"):
        evaluate_rasters(floats, good)
    with pytest.raises(InputError, match="3 bands"):
        evaluate_rasters(good, multi)
    with pytest.raises(InputFileError, match="not a readable raster"):
        evaluate_rasters(good, not_raster)
    with pytest.raises(ParameterError):
        evaluate_rasters(good, good, block_size=0)
    with pytest.raises(ParameterError):
        evaluate_rasters(good, good, scheduler="gpu")


# -- outputs ---------------------------------------------------------------------------------------------


def test_json_and_png_writers_are_atomic_and_refuse_to_overwrite(pair, tmp_path):
    import matplotlib.image

    p, t, pred, truth = pair
    ev = evaluate_rasters(p, t, ignore=9, block_size=64)
    out = tmp_path / "out"
    j = write_json(ev, out / "m.json")
    d = json.loads(Path(j).read_text())
    assert d["miou"] == pytest.approx(ev.metrics.miou)
    assert d["ignore"] == [9] and d["ignored_pixels"] == ev.ignored_pixels
    assert next(c for c in d["classes"] if c["value"] == 6)["iou"] is None
    png = write_confusion_png(ev.metrics, out / "cm.png")
    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank image
    with pytest.raises(OutputExistsError):
        write_confusion_png(ev.metrics, out / "cm.png")
    with pytest.raises(OutputExistsError):
        write_json(ev, out / "m.json")
    write_json(ev, out / "m.json", overwrite=True)
    assert sorted(x.name for x in out.iterdir()) == ["cm.png", "m.json"]  # no temp files left


# -- CLI -------------------------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def assert_one_line_error(result, code: int, text: str):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error:") and text in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture()
def hand_pair(tmp_path):
    """The hand example of test_metrics as rasters: the 11th pixel is prediction nodata, truth 9 ignored."""
    truth = np.array([[0, 0, 0, 1, 1, 1, 1, 5, 9, 9, 0]], dtype=np.uint8)
    pred = np.array([[0, 0, 1, 1, 1, 2, 1, 1, 0, 2, 255]], dtype=np.uint8)
    names = {0: "water", 1: "trees", 2: "built", 3: "crops", 5: "snow"}
    p = write_class_raster(tmp_path / "pred.tif", pred, nodata=255, names=names)
    t = write_class_raster(tmp_path / "truth.tif", truth)
    return p, t


def test_cli_table_shows_the_hand_computed_metrics(hand_pair, tmp_path):
    p, t = hand_pair
    r = run_cli(p, t, "--ignore", 9, "--json", tmp_path / "m.json", "--confusion-png", tmp_path / "cm.png")
    assert r.exit_code == 0, r.output
    out = r.output
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines()
            if line[:1].isdigit() and len(line.split()) == 8}
    assert rows["water"] == ["0.667", "1.000", "0.667", "0.800", "3", "2"]
    assert rows["trees"] == ["0.500", "0.600", "0.750", "0.667", "4", "5"]
    assert rows["crops"] == ["-", "-", "-", "-", "0", "0"]
    assert rows["snow"] == ["0.000", "-", "0.000", "0.000", "1", "0"]
    assert "mIoU 0.292" in out  # 7/24
    assert "kappa 0.368" in out  # 7/19
    assert "pixel accuracy 0.625" in out
    assert "8 pixels evaluated (nodata 1, ignored 2" in out
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["kappa"] == pytest.approx(7 / 19) and d["pixels"] == 8
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json_to_stdout_and_quiet(hand_pair):
    p, t = hand_pair
    r = run_cli(p, t, "--ignore", 9, "--json", "-")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["miou"] == pytest.approx(7 / 24)
    r = run_cli(p, t, "--quiet")
    assert r.exit_code == 0 and r.output == ""


def test_cli_bad_inputs_are_one_line_errors(hand_pair, tmp_path):
    p, t = hand_pair
    assert_one_line_error(run_cli(p, tmp_path / "missing.tif"), 3, "does not exist")
    floats = write_class_raster(tmp_path / "f.tif", np.zeros((1, 11), dtype=np.float32))
    assert_one_line_error(run_cli(floats, t), 3, "not integer class codes")
    shifted = write_class_raster(tmp_path / "s.tif", np.zeros((1, 11), dtype=np.uint8),
                                 transform=from_origin(X0 + 5, Y0, RES, RES))
    assert_one_line_error(run_cli(p, shifted), 3, "--align")
    assert_one_line_error(run_cli(p), 2, "PRED TRUTH")
    assert_one_line_error(run_cli(p, t, "--data", tmp_path / "cfg.yaml"), 2, "not both")
    (tmp_path / "exists.json").write_text("{}")
    assert_one_line_error(run_cli(p, t, "--json", tmp_path / "exists.json"), 5, "--overwrite")
    assert (tmp_path / "exists.json").read_text() == "{}"
    assert run_cli(p, t, "--json", tmp_path / "exists.json", "--overwrite", "-q").exit_code == 0
    assert json.loads((tmp_path / "exists.json").read_text())["pixels"] == 10


def test_cli_align(tmp_path):
    pred = blocky_classes(30, 30, seed=11)
    p = write_class_raster(tmp_path / "p.tif", pred)
    t = write_class_raster(tmp_path / "t.tif", pred[::2, ::2].copy(), transform=from_origin(X0, Y0, 20.0, 20.0))
    assert run_cli(p, t).exit_code == 3
    r = run_cli(p, t, "--align", "--json", "-")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["aligned"] is True and d["pixels"] == 900


# -- model + data config ---------------------------------------------------------------------------------


def test_evaluate_model_on_a_data_config(linear_model, tmp_path):
    """The linear test model predicts argmax(bands 1..3); labels differ from that on known pixels."""
    rng = np.random.default_rng(12)
    items = []
    expected = ConfusionMatrix.empty()
    for i, (h, w) in enumerate([(40, 50), (30, 36)]):
        cls = blocky_classes(h, w, seed=20 + i, n=3, cell=5)
        scene = rng.integers(1000, 1200, size=(4, h, w))
        for k in range(3):
            scene[k] += np.where(cls == k, 600, 0)
        label = noisy(cls, seed=30 + i, share=0.25, n=3)
        label[:3, :] = 9  # unlabelled
        (tmp_path / f"s{i}").mkdir()
        write_class_raster(tmp_path / f"s{i}" / "scene.tif", scene.astype(np.uint16))
        write_class_raster(tmp_path / f"s{i}" / "label.tif", label)
        items.append({"image": f"s{i}/scene.tif", "label": f"s{i}/label.tif"})
        expected = expected + confusion_counts(label, cls, ignore=[9])
    cfg = tmp_path / "data.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"images": items, "ignore": [9]}))
    ev = evaluate_model(linear_model, cfg, workers=1, block_size=32)
    assert ev.metrics.confusion.reindex(expected.values) == expected
    assert ev.metrics.names == ("water", "trees", "built")
    assert len(ev.inputs) == 2 and ev.model == "test-linear"
    # The same through the CLI, with the JSON written.
    r = run_cli("--model", linear_model, "--data", cfg, "--workers", 1, "--json", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["pixels"] == expected.total and d["model"] == "test-linear"
    # A config naming a missing label fails before any prediction, in one line.
    cfg.write_text(yaml.safe_dump({"images": [{"image": "s0/scene.tif", "label": "nope.tif"}]}))
    assert_one_line_error(run_cli("--model", linear_model, "--data", cfg), 3, "nope.tif")
    cfg.write_text("images: 3\n")
    assert_one_line_error(run_cli("--model", linear_model, "--data", cfg), 3, "images")


def test_evaluate_model_on_the_validation_scenes_of_a_training_config(linear_model, tmp_path):
    """``--data TRAIN.yaml``: exactly the images that training held out (whole groups by val_scenes)."""
    import yaml

    rng = np.random.default_rng(5)
    expected = ConfusionMatrix.empty()
    for i, (city, date) in enumerate([("a", "d1"), ("b", "d1"), ("b", "d2"), ("c", "d1")]):
        cls = blocky_classes(24, 30, seed=40 + i, n=3, cell=4)
        scene = rng.integers(1000, 1200, size=(4, 24, 30))
        for k in range(3):
            scene[k] += np.where(cls == k, 600, 0)
        label = noisy(cls, seed=50 + i, share=0.3, n=3)
        folder = tmp_path / "data" / city / date
        folder.mkdir(parents=True)
        write_class_raster(folder / "image.tif", scene.astype(np.uint16))
        write_class_raster(folder / "label.tif", label)
        if city == "b":  # only matches d1, but d2 is in the same group (the city) and held out too
            expected = expected + confusion_counts(label, cls, ignore=[255])
    train = {"images": ["data/*/*/image.tif"], "labels": "{dir}/label.tif", "split": "scenes", "group_level": 2,
             "val_scenes": ["*/b/d1/*"], "classes": [{"value": v, "name": n, "color": "#000000"}
                                                     for v, n in enumerate(("water", "trees", "built"))]}
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(train))
    ev = evaluate_model(linear_model, cfg, workers=1, block_size=32)
    assert sorted(Path(i.image).parent.name for i in ev.inputs) == ["d1", "d2"]
    assert all("/b/" in i.image for i in ev.inputs)
    assert ev.metrics.confusion.reindex(expected.values) == expected
    # a training config that picks validation at random names no images: one-line error
    cfg.write_text(yaml.safe_dump({k: v for k, v in train.items() if k != "val_scenes"}))
    assert_one_line_error(run_cli("--model", linear_model, "--data", cfg), 3, "val_scenes")
