"""Radiometry with known answers on the shipped real Sentinel-2 L1C sample and the default model: the same
ground in other units or with the baseline-04.00 offset must give the same map, or a clear refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg import predict_scene
from geoseg.errors import BandMismatchError, InputError
from geoseg.io.radiometry import decide_transform
from geoseg.model.package import read_card

SAMPLE = Path(__file__).resolve().parents[2] / "tiles" / "hongkong_20160927" / "image.tif"
CROP = Window(100, 250, 256, 256)  # harbour, built-up and forest


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> tuple[Path, np.ndarray, dict]:
    d = tmp_path_factory.mktemp("radiometry")
    with rasterio.open(SAMPLE) as src:
        data = src.read(window=CROP)
        profile = src.profile | {"width": CROP.width, "height": CROP.height,
                                 "transform": src.window_transform(CROP)}
        names = src.descriptions
    path = _write(d / "original.tif", data, profile, names)
    return path, data, profile


def _write(path: Path, data: np.ndarray, profile: dict, names, scales=None, offsets=None) -> Path:
    with rasterio.open(path, "w", **(profile | {"dtype": data.dtype.name})) as dst:
        dst.write(data)
        dst.descriptions = tuple(names)
        if scales is not None:
            dst.scales, dst.offsets = scales, offsets
    return path


def _names() -> tuple[str, ...]:
    return read_card("default").bands


def _map(scene, out: Path, **kw) -> np.ndarray:
    res = predict_scene(scene, "default", out, progress=False, overwrite=True, **kw)
    with rasterio.open(res.landcover) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def reference(crop, tmp_path_factory) -> np.ndarray:
    return _map(crop[0], tmp_path_factory.mktemp("ref"))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    valid = (a != 255) & (b != 255)
    return float((a[valid] == b[valid]).mean())


def test_the_original_passes_the_check_and_is_recorded(crop, reference, tmp_path):
    card = read_card("default")
    t = decide_transform(str(crop[0]), list(range(1, 10)), card.bands, means=card.normalization.a,
                         dn_scale=1e-4)
    assert t.is_identity and t.source == "none"
    res = predict_scene(crop[0], "default", tmp_path / "o", progress=False)
    assert json.loads(Path(res.run_record).read_text())["radiometry"]["source"] == "none"


def test_reflectance_x1000_is_refused_then_mapped_with_the_flag(crop, reference, tmp_path):
    path, data, profile = crop
    small = _write(tmp_path / "x1000.tif", (data // 10).astype(np.uint16), profile, _names())
    with pytest.raises(InputError, match=r"10 x smaller.*--input-scale 10"):
        predict_scene(small, "default", tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
    assert _agreement(_map(small, tmp_path / "flag", input_scale=10), reference) >= 0.99
    auto = predict_scene(small, "default", tmp_path / "auto", progress=False, input_scale="auto")
    rec = json.loads(Path(auto.run_record).read_text())["radiometry"]
    assert rec["source"] == "detected" and rec["scale"] == [10.0] * 9 and "smaller" in rec["detected"]


def test_float_reflectance_is_refused_then_mapped(crop, reference, tmp_path):
    path, data, profile = crop
    refl = _write(tmp_path / "refl.tif", (data / 10000.0).astype(np.float32), profile | {"nodata": 0.0}, _names())
    with pytest.raises(InputError, match=r"float reflectance 0\.\.1.*--input-scale 10000"):
        predict_scene(refl, "default", tmp_path / "refused", progress=False)
    assert _agreement(_map(refl, tmp_path / "flag", input_scale=10000), reference) >= 0.99


def test_baseline_04_offset_without_metadata_is_refused_with_metadata_it_is_used(crop, reference, tmp_path):
    path, data, profile = crop
    shifted = np.where(data > 0, data + 1000, 0).astype(np.uint16)
    bare = _write(tmp_path / "b04.tif", shifted, profile, _names())
    with pytest.raises(InputError, match=r"\+1000 radiometric offset.*--input-offset -1000"):
        predict_scene(bare, "default", tmp_path / "refused", progress=False)
    assert _agreement(_map(bare, tmp_path / "flag", input_offset=-1000), reference) >= 0.995
    # the same DN with the product's own metadata (RADIO_ADD_OFFSET -1000, QUANTIFICATION_VALUE 10000)
    meta = _write(tmp_path / "b04meta.tif", shifted, profile, _names(), scales=(1e-4,) * 9, offsets=(-0.1,) * 9)
    res = predict_scene(meta, "default", tmp_path / "meta", progress=False)
    with rasterio.open(res.landcover) as src:
        assert _agreement(src.read(1), reference) >= 0.995
    rec = json.loads(Path(res.run_record).read_text())["radiometry"]
    assert rec["source"] == "band metadata"
    assert rec["scale"] == pytest.approx([1.0] * 9) and rec["offset"] == pytest.approx([-1000.0] * 9)


def test_reversed_bands_are_refused(crop, tmp_path):
    path, data, profile = crop
    rev = _write(tmp_path / "rev.tif", data[::-1].copy(), profile, [f"band{i}" for i in range(9)])
    with pytest.raises(BandMismatchError, match="reverse order.*--bands"):
        predict_scene(rev, "default", tmp_path / "o", progress=False, bands=list(range(1, 10)))


def test_explicit_options_skip_the_check_and_bad_values_are_one_line(crop, tmp_path):
    with pytest.raises(Exception, match="--input-scale 'ten' is not a number"):
        predict_scene(crop[0], "default", tmp_path / "o", progress=False, input_scale="ten")
    with pytest.raises(Exception, match="must be > 0"):
        predict_scene(crop[0], "default", tmp_path / "o", progress=False, input_scale=0.0)
