"""The same ground fed as a stacked GeoTIFF, a SAFE (baseline 02.04 folder, 04.00 zip with the +1000 offset),
a STAC Item of per-band COGs (20 m bands at 20 m, with and without the offset) or separate band files gives the
same map through ``predict_scene`` and ``geoseg predict``, with the default (real, trained) model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg import predict_scene
from geoseg.cli import cli
from geoseg.errors import MissingBandError, ParameterError
from geoseg.io.clouds import read_cloud_mask
from geoseg.io.grid import Window
from geoseg.io.inputs import open_input, parse_band_option
from geoseg.testing_sources import (
    REFERENCE_BANDS,
    write_landsat,
    write_reference,
    write_safe,
    write_stac_item,
    write_stacked,
)

SIZE = 192  # a multiple of 6 (60 m bands); 19 x 19 km^2 of Hong Kong at 10 m


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    d = tmp_path_factory.mktemp("city")
    ref = write_reference(d / "reference.tif", size=SIZE)
    stacked = write_stacked(d / "stacked.tif", ref)
    result = predict_scene(stacked, "default", d / "out-stacked", progress=False)
    with rasterio.open(result.landcover) as src:
        expected = src.read(1)
    with rasterio.open(predict_scene(ref, "default", d / "out-ref", progress=False).landcover) as src:
        reference_map = src.read(1)
    return {"dir": d, "ref": ref, "stacked": stacked, "map": expected, "reference_map": reference_map}


def _map(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.mark.parametrize("kind", ["safe-0204", "safe-0400-zip", "l2a-0400", "stac-0400", "stac-1.1"])
def test_products_map_like_the_stacked_geotiff(kind, city, tmp_path):
    d = tmp_path
    if kind == "safe-0204":
        scene = write_safe(d, city["ref"], baseline="02.04")
    elif kind == "safe-0400-zip":
        scene = write_safe(d, city["ref"], baseline="04.00", as_zip=True)
    elif kind == "l2a-0400":
        scene = write_safe(d, city["ref"], baseline="04.00", level="L2A")
    elif kind == "stac-0400":
        scene = write_stac_item(d / "item", city["ref"], add_offset=True)
    else:
        scene = write_stac_item(d / "item", city["ref"], style="stac-1.1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict_scene(scene, "default", d / "out", progress=False, cloud_mask="none")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if kind == "l2a-0400":  # the level differs from the card's: said, not refused
        assert any("L2A product but model" in m for m in messages), messages
    else:
        assert messages == []
    got = _map(result.landcover)
    # same information (20 m bands at 20 m, bilinear onto 10 m) as the stacked GeoTIFF: the same map
    assert _agreement(got, city["map"]) >= 0.995
    record = json.loads(Path(result.run_record).read_text())
    assert record["radiometry"]["source"] == "band metadata"
    offset = 1000.0 if "0400" in kind else 0.0
    assert record["radiometry"]["offset"] == pytest.approx([-offset] * 9)
    assert record["source"]["bands"] == list(REFERENCE_BANDS)
    assert record["source"]["sensor"] == "sentinel-2"
    assert record["acquired"] == "2016-09-27T02:55:52Z"
    # the conversion applied is said in the STAC Item and the report too
    lineage = json.loads((d / "out" / "item.json").read_text())["properties"]["processing:lineage"]
    report = (d / "out" / "report.html").read_text()
    if "0400" in kind:
        assert "+ -1000" in lineage and "processing baseline 04.00" in lineage
        assert "+ -1000" in report
    assert "from the scene's band scale/offset metadata" in lineage


@pytest.mark.parametrize("kind", ["l2a-scl", "l1c-msk-classi", "l1c-msk-clouds-gml", "stac-l2a-scl"])
def test_the_products_cloud_masks_are_nodata_and_cloud_in_confidence(kind, city, tmp_path):
    if kind == "l2a-scl":
        scene = write_safe(tmp_path, city["ref"], baseline="04.00", level="L2A")
    elif kind == "l1c-msk-classi":
        scene = write_safe(tmp_path, city["ref"], baseline="04.00", as_zip=True)
    elif kind == "l1c-msk-clouds-gml":
        scene = write_safe(tmp_path, city["ref"], baseline="02.04")
    else:
        scene = write_stac_item(tmp_path / "item", city["ref"], style="earth-search", level="L2A")
    info, source = open_input(scene, wanted=REFERENCE_BANDS)
    assert source is not None and source.cloud_mask is not None
    masked = read_cloud_mask(source.cloud_mask, Window(0, 0, info.height, info.width))  # checked in tests/io
    assert 0.05 < masked.mean() < 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # L2A vs the L1C model
        result = predict_scene(scene, "default", tmp_path / "out", progress=False, confidence=True)
        clear = _map(predict_scene(scene, "default", tmp_path / "clear", progress=False, cloud_mask="none").landcover)
    got = _map(result.landcover)
    with rasterio.open(result.confidence) as src:
        conf = src.read(1)
    assert (got[masked] == 255).all() and (conf[masked] == 254).all()  # left out, and said why
    assert (got[~masked] != 255).all() and (conf[~masked] <= 100).all()
    # masking weighs pixels, it does not change what the network sees: clear pixels keep their classes
    assert (got[~masked] == clear[~masked]).all()
    assert result.cloud_pixels == int(masked.sum())
    record = json.loads(Path(result.run_record).read_text())
    assert record["cloud_pixels"] == int(masked.sum())
    assert record["cloud_mask"]["kind"] == source.cloud_mask.kind
    assert "cloud" in json.loads((tmp_path / "out" / "item.json").read_text())["properties"]["processing:lineage"]


def test_a_product_without_mask_says_so_and_a_user_mask_works(city, tmp_path):
    scene = write_safe(tmp_path, city["ref"], baseline="04.00", masks="none")
    with pytest.warns(UserWarning, match="carries no cloud mask"):
        predict_scene(scene, "default", tmp_path / "o1", progress=False)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:50, 20:90] = 1
    with rasterio.open(city["ref"]) as src:
        profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform}
    with rasterio.open(tmp_path / "mask.tif", "w", **profile) as dst:
        dst.write(mask[None])
    res = CliRunner().invoke(cli, ["predict", str(city["stacked"]), "--cloud-mask", str(tmp_path / "mask.tif"),
                                   "-o", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o2" / "run.json").read_text())["cloud_pixels"] == int(mask.sum())
    got = _map(tmp_path / "o2" / "landcover.tif")
    assert (got[mask == 1] == 255).all() and (got[mask == 0] != 255).all()
    res = CliRunner().invoke(cli, ["predict", str(city["stacked"]), "--cloud-mask", str(tmp_path / "none.tif"),
                                   "-o", str(tmp_path / "o3")])
    assert res.exit_code != 0 and "Traceback" not in res.output and "none.tif" in res.output


def test_the_20m_bands_at_20m_cost_little_against_the_10m_reference(city):
    """The reference's 20 m bands were resampled from 10 m data; a product keeps them at 20 m, so a few pixels
    at class edges differ: measured, not hidden (figure in docs/inputs.md; 97.98 % here with model v3, 98.9 %
    with v2: how much it costs depends on the model)."""
    assert _agreement(city["map"], city["reference_map"]) >= 0.97


def test_band_files_through_the_cli(city, tmp_path):
    item = write_stac_item(tmp_path / "bands", city["ref"])
    args = []
    for band in REFERENCE_BANDS:
        args += ["--band", f"{band}={tmp_path / 'bands' / ('B' + band[1:].zfill(2) + '.tif')}"]
    res = CliRunner().invoke(cli, ["predict", *args, "-o", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert _agreement(_map(tmp_path / "out" / "landcover.tif"), city["map"]) >= 0.995
    assert item.exists()


def test_band_option_errors(tmp_path):
    with pytest.raises(ParameterError, match="is not NAME=PATH"):
        parse_band_option(["B2"])
    with pytest.raises(ParameterError, match="not a band name geoseg knows"):
        parse_band_option(["B99=x.tif"])
    with pytest.raises(ParameterError, match="given twice"):
        parse_band_option(["B2=a.tif", "blue=b.tif"])
    res = CliRunner().invoke(cli, ["predict", "-o", str(tmp_path / "o"), "--band", f"B2={tmp_path}/none.tif"])
    assert res.exit_code != 0 and "no such file" in res.output and "Traceback" not in res.output


def test_scene_and_band_files_together_or_neither(city, tmp_path):
    res = CliRunner().invoke(cli, ["predict", str(city["stacked"]), "--band", f"B2={city['stacked']}",
                                    "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "not both" in res.output
    res = CliRunner().invoke(cli, ["predict", "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "no scene" in res.output


def test_a_product_missing_a_model_band_is_named(city, tmp_path):
    safe = write_safe(tmp_path, city["ref"], drop=("B11",))
    with pytest.raises(MissingBandError, match="has no band B11"):
        predict_scene(safe, "default", tmp_path / "o", progress=False)
    # a band the model does not use may be missing
    safe2 = write_safe(tmp_path / "2", city["ref"], drop=("B1", "B9"))
    assert predict_scene(safe2, "default", tmp_path / "o2", progress=False).tiles >= 1


def test_a_stac_item_through_the_cli_names_it_in_errors(city, tmp_path):
    item = write_stac_item(tmp_path / "item", city["ref"])
    (tmp_path / "item" / "B11.tif").unlink()
    res = CliRunner().invoke(cli, ["predict", str(item), "-o", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "item.json" in res.output and "B11" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "landcover.tif").exists()


def test_landsat_against_the_sentinel2_default_model_is_refused_naming_the_red_edge(city, tmp_path):
    folder = write_landsat(tmp_path, city["ref"])
    res = CliRunner().invoke(cli, ["predict", str(folder), "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "has no band B5" in res.output and "a model that needs only bands it has" in res.output


def test_landsat_with_a_model_of_its_bands_warns_the_sensor_differs(city, tmp_path):
    """A Landsat folder with a 4-band Sentinel-2 model (blue, green, red and nir08 = SR_B2..SR_B5): it runs, with
    the MTL's scale/offset, and says that the sensor differs from the card's."""
    import shutil

    from geoseg.testing import linear_model_package

    pkg = linear_model_package(tmp_path / "m")
    card = json.loads((pkg / "geoseg-model.json").read_text())
    card["bands"] = ["B2", "B3", "B4", "B8A"]
    card["input"] = {"sensor": "sentinel-2", "level": "L2A", "quantity": "surface_reflectance",
                     "dn_scale": 0.0001, "dn_offset": 0.0}
    (pkg / "geoseg-model.json").write_text(json.dumps(card))
    shutil.rmtree(pkg / ".cache", ignore_errors=True)
    folder = write_landsat(tmp_path / "ls", city["ref"])
    with pytest.warns(UserWarning, match="landsat-8 scene but model"):
        result = predict_scene(folder, pkg, tmp_path / "o", progress=False)
    record = json.loads(Path(result.run_record).read_text())
    assert record["radiometry"]["source"] == "band metadata"
    assert record["radiometry"]["scale"] == pytest.approx([2.75e-05 / 1e-4] * 4)
    assert record["radiometry"]["offset"] == pytest.approx([-0.2 / 1e-4] * 4)
    assert record["source"]["sensor"] == "landsat-8"
