"""``geoseg train``: tiny synthetic data sets built in code (EPSG:32633, 10 m pixels), tiny networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import InputError, OutputExistsError, ParameterError
from geoseg.testing import CRS, ORIGIN, RES, write_raster
from geoseg.training.config import TrainConfig, build_config, parse_loss

X0, Y0 = ORIGIN
BANDS = ["B2", "B3", "B4"]
CLASSES = [{"value": 1, "name": "water", "color": "#419BDF"}, {"value": 2, "name": "trees", "color": "#397D49"},
           {"value": 5, "name": "built", "color": "#C4281B"}]


def _scene(seed: int, h: int = 48, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """3-band uint16 image whose class (values 1, 2, 5) is the band that is 500 DN brighter, plus noise."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:h, 0:w]
    k = ((r // 6 + c // 9 + seed) % 3).astype(np.int64)
    img = rng.integers(800, 1100, size=(3, h, w))
    for b in range(3):
        img[b] += np.where(k == b, 500, 0)
    label = np.array([1, 2, 5], dtype=np.uint8)[k]
    return img.astype(np.uint16), label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """4 scenes in 4 folders; scene d has a nodata image corner, an ignore (255) strip and an unlisted value 7."""
    root = tmp_path_factory.mktemp("trainset")
    for i, name in enumerate("abcd"):
        d = root / name
        d.mkdir()
        img, lab = _scene(i)
        if name == "d":
            img[:, :4, :4] = 0
            lab[10:12, :] = 255
            lab[20, 20] = 7
        write_raster(d / "image.tif", img, nodata=0, descriptions=BANDS)
        write_raster(d / "label.tif", lab, nodata=255)
    return root


def _cfg(dataset: Path, tmp: Path, **kw) -> TrainConfig:
    base = {"images": [str(dataset / "*" / "image.tif")], "labels": "{dir}/label.tif", "classes": CLASSES,
            "val_scenes": ["*/d/*"], "arch": "PixelMLP", "window": 16, "val_window": 32, "samples_per_epoch": 32,
            "batch_size": 8, "epochs": 3, "lr": 0.05, "schedule": "constant", "seed": 3, "device": "cpu",
            "threads": 1, "output": str(tmp / "model"), "brightness": 20.0, "contrast": 0.05}
    base.update(kw)
    return TrainConfig(**base).validate()


def test_training_reduces_loss_and_writes_a_loadable_package(dataset, tmp_path):
    from geoseg.model.package import load_model
    from geoseg.training.loop import train

    lines: list[str] = []
    res = train(_cfg(dataset, tmp_path, epochs=4), log=lines.append)
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0], losses
    assert res.best_miou is not None and res.best_miou > 0.8  # the classes are spectrally separable
    assert any(line.startswith("epoch   4/4") and "val_mIoU" in line for line in lines)
    card, net = load_model(res.output)
    assert card.trained and card.architecture == "PixelMLP" and list(card.bands) == BANDS
    assert card.class_values == [1, 2, 5]
    val = card.extra["metrics"]["validation"]
    assert val["miou"] == pytest.approx(res.best_miou) and val["epoch"] == res.best_epoch
    assert set(val["per_class"]) == {"water", "trees", "built"}
    training = card.extra["training"]
    assert training["validation_scenes"] == ["d/image.tif"] and len(training["train_scenes"]) == 3
    # normalisation: per-band mean/std of the valid pixels of the three training scenes
    imgs = np.stack([_scene(i)[0] for i in range(3)]).astype(np.float64)
    assert card.normalization.kind == "meanstd"
    np.testing.assert_allclose(card.normalization.a, imgs.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(card.normalization.b, imgs.std(axis=(0, 2, 3)), rtol=1e-9)
    # per-epoch logs
    work = Path(res.work_dir)
    assert (work / "log.csv").read_text().splitlines()[0].startswith("epoch,train_loss,val_loss,val_miou")
    assert len(json.loads((work / "log.json").read_text())) == 4


def test_trained_package_predicts_with_geoseg_predict(dataset, tmp_path):
    from geoseg.predict.api import predict_scene
    from geoseg.training.loop import train

    res = train(_cfg(dataset, tmp_path, epochs=4), log=None)
    out = predict_scene(dataset / "d" / "image.tif", res.output, tmp_path / "pred", workers=1, progress=False)
    with rasterio.open(out.landcover) as s:
        pred = s.read(1)
    with rasterio.open(dataset / "d" / "label.tif") as s:
        truth = s.read(1)
    keep = np.isin(truth, [1, 2, 5]) & (pred != 255)
    assert (pred[keep] == truth[keep]).mean() > 0.9
    assert (pred[:4, :4] == 255).all()  # image nodata stays nodata


def test_resume_continues_from_the_checkpoint_with_identical_results(dataset, tmp_path):
    from safetensors.torch import load_file

    from geoseg.training.loop import train

    full = train(_cfg(dataset, tmp_path / "a", schedule="onecycle"), log=None)

    class Stop(Exception):
        pass

    def interrupt(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise Stop

    cfg_b = _cfg(dataset, tmp_path / "b", schedule="onecycle")
    with pytest.raises(Stop):
        train(cfg_b, log=interrupt)
    work_b = cfg_b.work_path
    assert json.loads((work_b / "latest.json").read_text())["epoch"] == 2
    assert not Path(cfg_b.output).exists()
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg_b, log=None)  # an earlier run's checkpoints are never silently replaced
    lines: list[str] = []
    resumed = train(cfg_b, resume=True, log=lines.append)
    assert lines[0].startswith("reading") and any(line.startswith("resuming after epoch 2") for line in lines)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert sum(line.startswith("epoch ") for line in lines) == 1  # only epoch 3 was trained
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    wa = load_file(str(Path(full.work_dir) / "ckpt-epoch0003" / "model.safetensors"))
    wb = load_file(str(work_b / "ckpt-epoch0003" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_a_changed_config_and_a_missing_checkpoint(dataset, tmp_path):
    from geoseg.training.loop import train

    cfg = _cfg(dataset, tmp_path, epochs=1)
    with pytest.raises(InputError, match="nothing to resume"):
        train(cfg, resume=True, log=None)
    train(cfg, log=None)
    changed = _cfg(dataset, tmp_path, epochs=1, lr=0.01, output=str(tmp_path / "model2"),
                   work_dir=str(cfg.work_path))
    with pytest.raises(ParameterError, match="lr"):
        train(changed, resume=True, log=None)


def test_ignore_and_nodata_pixels_are_excluded(dataset, tmp_path):
    from geoseg.model.card import parse_classes
    from geoseg.training.data import IGNORE, Pair, load_scene
    from geoseg.training.losses import CombinedLoss

    cfg = _cfg(dataset, tmp_path)
    d = dataset / "d"
    s = load_scene(Pair(str(d / "image.tif"), str(d / "label.tif")), BANDS, parse_classes(CLASSES), cfg)
    _, lab = _scene(3)
    assert (s.target[:4, :4] == IGNORE).all() and not s.valid[:4, :4].any()  # image nodata
    assert (s.target[10:12] == IGNORE).all()  # ignore value 255
    assert s.target[20, 20] == IGNORE and s.unlisted == {7: 1}  # value not in the class list
    keep = s.target >= 0
    np.testing.assert_array_equal(np.array([1, 2, 5])[s.target[keep]], lab[keep])
    # ignored pixels do not contribute to any loss term: their logits get no gradient
    t = torch.from_numpy(s.target[None].astype(np.int64))
    for spec in ("ce", "dice", "focal", "ce:1,dice:0.5,focal:2"):
        logits = torch.randn(1, 3, *s.shape, requires_grad=True)
        loss = CombinedLoss(parse_loss(spec), 3, [1.0, 2.0, 0.5])(logits, t)
        loss.backward()
        g = logits.grad.abs().sum(dim=1)[0]
        assert torch.isfinite(loss) and float(g[t[0] == IGNORE].max()) == 0.0 and float(g[t[0] >= 0].max()) > 0


def test_vector_labels_rasterize_onto_the_right_pixels(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.model.card import parse_classes
    from geoseg.training.data import IGNORE, Pair, load_scene

    img, _ = _scene(0, 20, 30)
    image = write_raster(tmp_path / "image.tif", img, nodata=0, descriptions=BANDS)

    def px(r0, r1, c0, c1):  # pixel rows r0..r1-1, cols c0..c1-1 as a polygon in EPSG:32633
        return box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)

    gdf = gpd.GeoDataFrame({"lc": [2, "built", 1]},
                           geometry=[px(2, 6, 3, 8), px(10, 15, 20, 26), px(4, 5, 6, 7)], crs=CRS)
    gpkg = tmp_path / "labels.gpkg"
    gdf.to_crs("EPSG:4326").to_file(gpkg)  # stored in another CRS: reprojected onto the image grid
    cfg = _cfg(tmp_path, tmp_path, label_attribute="lc")
    s = load_scene(Pair(str(image), str(gpkg)), BANDS, parse_classes(CLASSES), cfg)
    want = np.full((20, 30), IGNORE, dtype=np.int16)
    want[2:6, 3:8] = 1  # trees (value 2) -> index 1
    want[10:15, 20:26] = 2  # 'built' given by name -> index 2
    want[4, 6] = 0  # later feature wins: water
    # reprojection to EPSG:4326 and back moves edges by far less than a pixel: centres decide
    np.testing.assert_array_equal(s.target, want)


def test_block_split_is_spatially_disjoint(dataset, tmp_path):
    from geoseg.model.card import parse_classes
    from geoseg.training.data import Pair, load_scene, split_scenes

    cfg = _cfg(dataset, tmp_path, split="blocks", val_block=16, val_buffer=4, val_fraction=0.25)
    pairs = [Pair(str(dataset / n / "image.tif"), str(dataset / n / "label.tif")) for n in "ab"]
    scenes = [load_scene(p, BANDS, parse_classes(CLASSES), cfg) for p in pairs]
    train_sc, val_sc, desc = split_scenes(scenes, cfg)
    assert desc["validation_blocks"] == 2 * round(0.25 * 9)
    for tr, va in zip(train_sc, val_sc):
        v = va.target >= 0
        assert v.any() and not (v & (tr.target >= 0)).any()
        # the buffer: no training label within 4 px of a validation pixel
        rows, cols = np.nonzero(v)
        near = np.zeros_like(v)
        for r, c in zip(rows, cols):
            near[max(0, r - 4):r + 5, max(0, c - 4):c + 5] = True
        assert not (near & (tr.target >= 0)).any()


def test_scene_split_keeps_groups_together(dataset, tmp_path):
    from geoseg.training.data import find_pairs

    cfg = _cfg(dataset, tmp_path, val_scenes=[], val_fraction=0.5, group_level=2)
    pairs = find_pairs(cfg)
    assert len({p.group for p in pairs}) == 1  # every image shares the grand-parent folder
    cfg = _cfg(dataset, tmp_path, exclude=["*/c/*"])
    assert [Path(p.image).parent.name for p in find_pairs(cfg)] == ["a", "b", "d"]


def test_class_balanced_sampling_favours_rare_classes(tmp_path):
    from geoseg.training.data import TrainScene, WindowSampler

    t = np.zeros((64, 64), dtype=np.int16)
    t[30:32, 30:32] = 1  # 4 px of a rare class
    s = TrainScene("x", "y", "g", np.zeros((1, 64, 64), np.uint16), np.ones((64, 64), bool), t)
    rng = np.random.default_rng(0)
    for mode, lo, hi in (("random", 0.0, 0.05), ("balanced", 0.4, 0.6)):
        sampler = WindowSampler([s], 2, 16, mode, 1.0, seed=0)
        wins = sampler.draw(400, rng)
        rare = np.mean([(t[r:r + 16, c:c + 16] == 1).any() for _, r, c in wins])
        assert lo <= rare <= hi, (mode, rare)


def test_fine_tuning_with_a_new_class_list_gets_a_new_head(dataset, tmp_path):
    from geoseg.model.package import load_model
    from geoseg.training.loop import train

    base = train(_cfg(dataset, tmp_path / "base", epochs=1), log=None)
    _, net0 = load_model(base.output)
    new = [{"value": 1, "name": "water"}, {"value": 2, "name": "vegetation"}, {"value": 5, "name": "built"},
           {"value": 9, "name": "other"}]
    lines: list[str] = []
    cfg = _cfg(dataset, tmp_path / "ft", epochs=1, lr=1e-9, arch=None, classes=new, init_from=base.output)
    res = train(cfg, log=lines.append)
    card, net = load_model(res.output)
    assert card.n_classes == 4 and card.architecture == "PixelMLP"
    assert any("fine-tuning from" in line and "new head" in line for line in lines)
    assert card.normalization == load_model(base.output)[0].normalization
    s0, s1 = net0.state_dict(), net.state_dict()
    close = {"rtol": 0, "atol": 1e-6}  # lr 1e-9: training barely moves the weights
    torch.testing.assert_close(s1["net.0.weight"], s0["net.0.weight"], **close)  # body copied
    assert s1["net.2.weight"].shape[0] == 4
    torch.testing.assert_close(s1["net.2.weight"][0], s0["net.2.weight"][0], **close)  # 'water' kept its row
    torch.testing.assert_close(s1["net.2.weight"][2], s0["net.2.weight"][2], **close)  # 'built' too
    assert (s1["net.2.weight"][1] - s0["net.2.weight"][1]).abs().max() > 1e-3  # 'vegetation' is new


def test_tiny_unet_trains_and_records_the_output_stride(dataset, tmp_path):
    from geoseg.model.package import read_card
    from geoseg.training.loop import train

    cfg = _cfg(dataset, tmp_path, arch="Unet", encoder="resnet18", epochs=1, samples_per_epoch=8, lr=1e-3,
               arch_params={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}, tile_size=256, overlap=32,
               half=True, loss="ce:1,dice:0.5", sampling="balanced", class_weights="auto")
    res = train(cfg, log=None)
    card = read_card(res.output)
    assert card.output_stride == 8 and card.tile_size == 256 and card.arch_params["encoder_depth"] == 3
    from safetensors import safe_open

    with safe_open(str(Path(res.output) / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("segmentation_head.0.weight").dtype == torch.float16
    with pytest.raises(ParameterError, match="multiple of the output stride"):
        train(_cfg(dataset, tmp_path / "x", arch="Unet", encoder="resnet18", window=20,
                   arch_params={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}), log=None)


def test_cli_yaml_with_overrides(dataset, tmp_path):
    import yaml
    from click.testing import CliRunner

    from geoseg.cli import cli

    conf = {"images": [str(dataset / "*" / "image.tif")], "labels": "{dir}/label.tif", "classes": CLASSES,
            "val_scenes": ["*/d/*"], "arch": "PixelMLP", "window": 16, "val_window": 32,
            "samples_per_epoch": 16, "epochs": 5, "lr": 0.05, "device": "cpu", "threads": 1,
            "output": "out/model"}
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    runner = CliRunner()
    r = runner.invoke(cli, ["train", str(path), "--epochs", "1", "--val-scenes", "*/c/*,*/d/*", "--no-d4"])
    assert r.exit_code == 0, r.output
    model = tmp_path / "out" / "model"  # relative paths in the YAML are relative to its folder
    card = json.loads((model / "geoseg-model.json").read_text())
    assert card["training"]["epochs_run"] == 1 and card["training"]["config"]["d4"] is False
    assert card["training"]["validation_scenes"] == ["c/image.tif", "d/image.tif"]
    assert "epoch   1/1" in r.output
    r = runner.invoke(cli, ["train", str(path), "--epochs", "1"])
    assert r.exit_code == 5 and "--overwrite" in r.output
    r = runner.invoke(cli, ["train", str(path), "--bogus", "1"])
    assert r.exit_code == 2
    (tmp_path / "bad.yaml").write_text("epocs: 3\n")
    r = runner.invoke(cli, ["train", str(tmp_path / "bad.yaml")])
    assert r.exit_code == 2 and "epocs" in r.output


def test_config_parsing():
    assert parse_loss("ce") == {"ce": 1.0}
    assert parse_loss("ce+dice") == {"ce": 1.0, "dice": 1.0}
    assert parse_loss("ce:1,focal:0.5") == {"ce": 1.0, "focal": 0.5}
    with pytest.raises(ParameterError):
        parse_loss("hinge")
    cfg = build_config(None, {"images": "a/*.tif", "classes": json.dumps(CLASSES), "arch_params": "{encoder_depth: 4}",
                              "epochs": "7", "input_nodata": "none"}, cwd="/data")
    assert cfg.images == ["/data/a/*.tif"] and cfg.epochs == 7 and cfg.input_nodata is None
    assert cfg.arch_params == {"encoder_depth": 4} and cfg.classes[2]["value"] == 5
    with pytest.raises(ParameterError, match="epochs"):
        build_config(None, {"images": "a", "classes": json.dumps(CLASSES), "epochs": "x"})
