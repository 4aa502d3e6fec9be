"""``geoseg train`` and ``geoseg evaluate --data`` on products (SAFE, STAC Item), and the card's ``input``.

Known answer: the same pixels as a Sentinel-2 SAFE of processing baseline 04.00 (DN + 1000, offset
metadata), as a STAC Item of per-band COGs and as the hand-stacked GeoTIFF must give the same training
arrays, and a model trained on products declares what its inputs mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

import geoseg.testing_sources as ts
from geoseg.errors import ParameterError
from geoseg.model.card import InputSpec
from geoseg.testing import write_raster
from geoseg.training.config import TrainConfig
from geoseg.training.data import Pair, load_scene, open_images, training_input
from geoseg.training.network import load_classes

pytestmark = pytest.mark.skipif(not ts.SAMPLE.exists(), reason="the shipped Hong Kong sample is absent")

CLASSES = [{"value": v, "name": n, "color": c} for v, n, c in
           [(0, "water", "#419BDF"), (1, "trees", "#397D49"), (6, "built", "#C4281B")]]
L1C = InputSpec("sentinel-2", "L1C", "toa_reflectance", 1e-4, 0.0)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """One reference crop as a stacked GeoTIFF, a baseline-04.00 SAFE, a STAC Item and an L2A SAFE, each
    with the same label raster (classes by the brightness of B8 and B4) on the reference grid."""
    root = tmp_path_factory.mktemp("products")
    ref = ts.write_reference(root / "reference.tif", size=120)
    for sub in ("tif", "safe", "stac", "l2a"):
        (root / sub).mkdir()
    forms = {"tif": ts.write_stacked(root / "tif" / "image.tif", ref),
             "safe": ts.write_safe(root / "safe", ref, baseline="04.00", masks="none"),
             "stac": ts.write_stac_item(root / "stac", ref, add_offset=True),
             "l2a": ts.write_safe(root / "l2a", ref, baseline="04.00", level="L2A", masks="none")}
    with rasterio.open(forms["tif"]) as src:
        b4, b8 = src.read(3).astype(float), src.read(7).astype(float)
        profile_label = np.where(b8 < 1200, 0, np.where(b8 > 1.5 * b4, 1, 6)).astype("uint8")
    labels = {}
    for k, path in forms.items():
        lab = path.parent / f"{k}_label.tif"
        write_raster(lab, profile_label, transform=src.transform, crs=src.crs.to_string(), nodata=255)
        labels[k] = lab
    return forms, labels


def _cfg(forms, labels, keys, tmp_path, **kw) -> TrainConfig:
    base = {"pairs": [{"image": str(forms[k]), "label": str(labels[k])} for k in keys], "classes": CLASSES,
            "bands": list(ts.REFERENCE_BANDS), "split": "blocks", "val_block": 64, "arch": "PixelMLP",
            "window": 32, "val_window": 32, "samples_per_epoch": 16, "batch_size": 8, "epochs": 1,
            "schedule": "constant", "device": "cpu", "threads": 1, "output": str(tmp_path / "model")}
    base.update(kw)
    return TrainConfig(**base).validate()


@pytest.mark.parametrize("form", ["safe", "stac"])
def test_a_product_gives_the_training_arrays_of_the_stacked_geotiff(form, scenes, tmp_path):
    forms, labels = scenes
    cfg = _cfg(forms, labels, ["tif", form], tmp_path)
    pairs = [Pair(str(forms[k]), str(labels[k])) for k in ("tif", form)]
    opened = open_images(pairs, cfg.bands)
    spec = training_input(cfg, None, opened)
    assert spec == L1C  # read from the product: L1C, reflectance x 10000
    tif, product = (load_scene(p, cfg.bands, load_classes(cfg, None), cfg, o, spec) for p, o in zip(pairs, opened))
    # the SAFE/STAC DN are stored + 1000 with offset metadata: converted back to the GeoTIFF's DN exactly
    np.testing.assert_array_equal(product.valid, tif.valid)
    np.testing.assert_array_equal(product.x.astype(np.float64), tif.x.astype(np.float64))
    np.testing.assert_array_equal(product.target, tif.target)
    assert int(tif.valid.sum()) > 0.9 * tif.valid.size


def test_training_units_are_decided_or_refused(scenes, tmp_path):
    forms, labels = scenes
    cfg = _cfg(forms, labels, ["tif"], tmp_path)
    plain = open_images([Pair(str(forms["tif"]), str(labels["tif"]))], cfg.bands)
    assert training_input(cfg, None, plain) is None  # a plain raster says nothing
    assert training_input(cfg, L1C, plain) == L1C  # fine-tuning keeps the package's units
    mixed = open_images([Pair(str(forms[k]), str(labels[k])) for k in ("safe", "l2a")], cfg.bands)
    with pytest.raises(ParameterError, match="mix sentinel-2 L1C, sentinel-2 L2A; give 'input'"):
        training_input(cfg, None, mixed)
    declared = _cfg(forms, labels, ["tif"], tmp_path, input={"sensor": "sentinel-2", "level": "L1C",
                                                             "quantity": "toa_reflectance", "dn_scale": 1e-4})
    said: list[str] = []
    assert training_input(declared, None, mixed, said.append) == L1C
    assert any("L2A" in s and "for a model of L1C inputs" in s for s in said)
    with pytest.raises(ParameterError, match="differs from the fine-tuned package's"):
        training_input(declared, InputSpec("sentinel-2", "L1C", "toa_reflectance", 1.0, 0.0), plain)
    with pytest.raises(ParameterError, match="input dn_scale -1.0 must be > 0"):
        _cfg(forms, labels, ["tif"], tmp_path, input={"dn_scale": -1})


def test_undeclared_units_with_band_metadata_are_refused(scenes, tmp_path):
    forms, labels = scenes
    scaled = tmp_path / "scaled.tif"
    with rasterio.open(forms["tif"]) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(scaled, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ts.REFERENCE_BANDS
        dst.scales, dst.offsets = (1e-4,) * 9, (-0.1,) * 9
    cfg = _cfg({"x": scaled}, {"x": labels["tif"]}, ["x"], tmp_path)
    pair = Pair(str(scaled), str(labels["tif"]))
    opened = open_images([pair], cfg.bands)
    with pytest.raises(ParameterError, match="scale/offset metadata but the training units are undeclared"):
        load_scene(pair, cfg.bands, load_classes(cfg, None), cfg, opened[0], None)
    # declared: the metadata converts the values (DN x 1e-4 - 0.1 = reflectance -> reflectance x 10000)
    scene = load_scene(pair, cfg.bands, load_classes(cfg, None), cfg, opened[0], L1C)
    assert scene.x[scene.valid[None].repeat(9, 0)].min() >= -1000
    np.testing.assert_allclose(scene.x[:, scene.valid], data[:, scene.valid].astype(np.float32) - 1000)


def test_train_on_products_declares_the_input_and_evaluate_reads_them(scenes, tmp_path):
    from geoseg.evaluation.api import evaluate_model
    from geoseg.model.package import load_model
    from geoseg.training.loop import train

    forms, labels = scenes
    res = train(_cfg(forms, labels, ["safe", "stac"], tmp_path), log=None)
    card, _ = load_model(res.output)
    assert card.input == L1C
    ev = evaluate_model(res.output, [{"image": str(forms["safe"]), "label": str(labels["safe"])},
                                     {"image": str(forms["tif"]), "label": str(labels["tif"])}])
    safe, tif = ev.inputs
    # the SAFE and the stacked GeoTIFF are the same pixels: the same agreement, pixel for pixel
    assert safe.pixels == tif.pixels > 0 and safe.nodata_pixels == tif.nodata_pixels
    assert safe.pixel_accuracy == tif.pixel_accuracy and safe.miou == tif.miou
