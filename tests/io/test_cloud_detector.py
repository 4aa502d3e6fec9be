"""``--cloud-mask detect`` (geoseg.io.cloud_detector): s2cloudless on an L1C SAFE with a painted cloud finds the
cloud and leaves the clear ground; the missing extra, an L2A and a missing band are one-line refusals."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import geoseg.io.cloud_detector as cd
from geoseg.cli import cli
from geoseg.errors import MissingBandError, ParameterError, UnreadableBandError
from geoseg.io.cloud_detector import DETECTOR_BANDS, detect_clouds, plan_detection
from geoseg.io.clouds import read_cloud_mask
from geoseg.io.grid import Window
from geoseg.io.inputs import open_input
from geoseg.testing_sources import REFERENCE_BANDS, write_reference, write_safe

SIZE = 240  # 2.4 km: 40 x 40 pixels at 60 m
CLOUD = (60, 60, 150, 150)  # rows/cols (10 m) of the painted cloud: 60 m pixels 10..25
#: a bright, white, opaque cloud in top-of-atmosphere reflectance x 10000 (B2, B3, B4, B5, B6, B7, B8, B11, B12)
CLOUD_DN = (6000, 6000, 6000, 6200, 6300, 6400, 6500, 4500, 3500)


@pytest.fixture(scope="module")
def cloudy_ref(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clouds")
    ref = write_reference(d / "ref.tif", size=SIZE)
    with rasterio.open(ref, "r+") as dst:
        data = dst.read()
        r0, c0, r1, c1 = CLOUD
        data[:, r0:r1, c0:c1] = np.asarray(CLOUD_DN, dtype="uint16")[:, None, None]
        dst.write(data)
    assert list(REFERENCE_BANDS) == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"]
    return ref


def _plan(scene):
    info, source = open_input(scene, wanted=("B2", "B3", "B4", "B8"))
    return plan_detection(scene, None, info, source), info


def test_the_painted_cloud_is_masked_and_the_clear_ground_is_not(cloudy_ref, tmp_path, monkeypatch):
    pytest.importorskip("s2cloudless")
    scene = write_safe(tmp_path, cloudy_ref, masks="none")  # an L1C without a usable mask
    plan, info = _plan(scene)

    def no_network(*args, **kwargs):
        raise AssertionError("the cloud detector tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # the model is in the wheel: nothing downloads
    mask = detect_clouds(plan, tmp_path / "work")
    got = read_cloud_mask(mask, Window(0, 0, info.height, info.width))
    assert got.shape == (SIZE, SIZE)
    r0, c0, r1, c1 = CLOUD
    assert got[r0:r1, c0:c1].all()  # every pixel of the cloud (dilation only widens it)
    far = np.ones_like(got)  # ground more than 3 coarse pixels (180 m) beyond the cloud's edge: clear
    far[max(0, r0 - 180):r1 + 180, max(0, c0 - 180):c1 + 180] = False
    assert not got[far].any()
    d = mask.to_json()["detector"]
    assert mask.kind == "detected" and d["detector"] == "s2cloudless" and d["resolution_m"] == 60.0
    assert d["bands"] == ",".join(DETECTOR_BANDS) and 0.1 < d["cloud_fraction"] < 0.5
    with rasterio.open(tmp_path / "work" / "clouds_detected.tif") as src:  # the coarse mask, at 60 m
        assert (src.width, src.height, src.res) == (40, 40, (60.0, 60.0))


def test_strips_with_their_halo_give_the_one_window_mask(cloudy_ref, tmp_path, monkeypatch):
    pytest.importorskip("s2cloudless")
    plan, _ = _plan(write_safe(tmp_path, cloudy_ref, masks="none"))
    detect_clouds(plan, tmp_path / "one")
    monkeypatch.setattr(cd, "STRIP_ROWS", 7)  # 6 strips, two of them through the cloud's edges
    detect_clouds(plan, tmp_path / "strips")
    with rasterio.open(tmp_path / "one" / "clouds_detected.tif") as a, \
            rasterio.open(tmp_path / "strips" / "clouds_detected.tif") as b:
        assert (a.read(1) == b.read(1)).all() and (a.read(1) == 1).any()


def test_a_partial_last_coarse_pixel_is_read_on_its_own():
    assert cd._spans(3, 14, 6, 0, 3) == [(0, 2, 0, 12), (2, 3, 12, 14)]
    assert cd._spans(3, 14, 6, 2, 3) == [(2, 3, 12, 14)]
    assert cd._spans(2, 12, 6, 0, 2) == [(0, 2, 0, 12)]


def test_predict_with_detect_leaves_the_cloud_out(cloudy_ref, tmp_path):
    pytest.importorskip("s2cloudless")
    scene = write_safe(tmp_path, cloudy_ref, masks="none")
    res = CliRunner().invoke(cli, ["predict", str(scene), "--cloud-mask", "detect", "-o", str(tmp_path / "out"),
                                   "--confidence"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["cloud_mask"]["kind"] == "detected" and record["cloud_mask"]["origin"] == str(scene)
    assert record["cloud_mask"]["detector"]["threshold"] == 0.4
    assert "clouds detected by s2cloudless" in record["cloud_mask"]["description"]
    r0, c0, r1, c1 = CLOUD
    with rasterio.open(tmp_path / "out" / "landcover.tif") as src:
        lc = src.read(1)
    with rasterio.open(tmp_path / "out" / "confidence.tif") as src:
        conf = src.read(1)
    assert (lc[r0:r1, c0:c1] == 255).all() and (conf[r0:r1, c0:c1] == 254).all()
    assert record["cloud_pixels"] == int((conf == 254).sum()) >= (r1 - r0) * (c1 - c0)
    assert (lc[:20, :20] != 255).all()  # a clear corner is mapped
    assert not list((tmp_path / "out").glob(".clouds.*"))  # the scratch folder is gone


def test_without_the_extra_detect_is_one_line_naming_pip_install(cloudy_ref, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "s2cloudless", None)  # import s2cloudless -> ImportError
    scene = write_safe(tmp_path, cloudy_ref, masks="none")
    with pytest.raises(ParameterError, match=r"needs s2cloudless, which is not installed \(pip install "
                                             r"'geoseg\[clouds\]'\)"):
        _plan(scene)
    res = CliRunner().invoke(cli, ["predict", str(scene), "--cloud-mask", "detect", "-o", str(tmp_path / "out")])
    assert res.exit_code == ParameterError.exit_code and "pip install 'geoseg[clouds]'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out" / "landcover.tif").exists()


def test_l2a_and_plain_rasters_and_missing_bands_are_refused(cloudy_ref, tmp_path):
    pytest.importorskip("s2cloudless")
    l2a = write_safe(tmp_path / "l2a", cloudy_ref, level="L2A", masks="none")
    with pytest.raises(ParameterError, match=r"a sentinel-2 L2A product; --cloud-mask detect \(s2cloudless\) works "
                                             r"on Sentinel-2 L1C top-of-atmosphere reflectance only"):
        _plan(l2a)
    res = CliRunner().invoke(cli, ["predict", str(cloudy_ref), "--cloud-mask", "detect", "-o", str(tmp_path / "o")])
    assert res.exit_code == ParameterError.exit_code and "not a plain raster" in res.output
    no_b10 = write_safe(tmp_path / "nob10", cloudy_ref, drop=("B10",), masks="none")
    with pytest.raises(MissingBandError, match=r"no band B10 .*needs B1, B2, B4, B5, B8, B8A, B9, B10, B11, B12"):
        _plan(no_b10)


def test_a_band_damaged_after_planning_is_one_line(cloudy_ref, tmp_path):
    pytest.importorskip("s2cloudless")
    scene = write_safe(tmp_path, cloudy_ref, masks="none")
    plan, _ = _plan(scene)
    (b10,) = scene.glob("GRANULE/*/IMG_DATA/*_B10.jp2")
    b10.write_bytes(b10.read_bytes()[:200])  # truncated
    with pytest.raises(UnreadableBandError, match=r"cannot read its bands for the cloud detection .*download it again"):
        detect_clouds(plan, tmp_path / "work")
    assert not (tmp_path / "work" / "clouds_detected.tif").exists()
