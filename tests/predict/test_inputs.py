"""Doubtful input is named: unnamed bands (order assumed), too few bands for the model, an untrained model."""

from __future__ import annotations

import pytest

from geoseg import predict_scene
from geoseg.errors import BandMismatchError
from geoseg.testing import pattern_scene, write_raster


def test_unnamed_bands_warn_the_order_assumed_and_untrained_models_warn(tmp_path, linear_model):
    scene, _ = pattern_scene(64, 64)
    path = write_raster(tmp_path / "s.tif", scene)
    with pytest.warns(UserWarning) as caught:
        predict_scene(path, linear_model, tmp_path / "o", progress=False)
    messages = [str(w.message) for w in caught]
    assert any("no names" in m and "B2,B3,B4,B8" in m for m in messages), messages
    assert any("untrained" in m for m in messages), messages


def test_too_few_bands_name_the_model_bands(tmp_path):
    scene, _ = pattern_scene(64, 64)
    path = write_raster(tmp_path / "rgb.tif", scene[:3])
    with pytest.raises(BandMismatchError, match=r"this model needs these 9 bands \(B2,B3,B4,B5,B6,B7,B8,B11,B12\) "
                                                r"and the input has 3 unnamed bands"):
        predict_scene(path, "default", tmp_path / "o", progress=False)
