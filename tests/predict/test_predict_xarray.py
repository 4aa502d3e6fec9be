"""``predict_xarray``: the same map as ``predict_scene`` from the same pixels, lazily, for xarray users."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geoseg import predict_scene, predict_xarray
from geoseg.errors import InputError
from geoseg.testing import BANDS4, pattern_scene, write_raster

rioxarray = pytest.importorskip("rioxarray")
dask_array = pytest.importorskip("dask.array")


def _landcover(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_known_answer_model_gives_the_files_map_lazily(tmp_path, linear_model):
    scene, expected = pattern_scene(300, 260)  # PixelLinear: the class is a known function of the input
    scene[:, :20, :30] = 0  # nodata corner
    path = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4, nodata=0)
    arr = rioxarray.open_rasterio(path, chunks={"x": 128, "y": 128})
    with pytest.warns(UserWarning, match="untrained"):
        out = predict_xarray(arr, linear_model, block_size=256, tile_size=64, overlap=16)
    assert isinstance(out.data, dask_array.Array)  # lazy: nothing computed yet
    assert out.dims == ("y", "x") and out.shape == (300, 260)
    np.testing.assert_array_equal(out.x.values, arr.x.values)
    classes = out.values
    with pytest.warns(UserWarning):
        ref = _landcover(predict_scene(path, linear_model, tmp_path / "o", block_size=256, progress=False,
                                       tile_size=64, overlap=16).landcover)
    np.testing.assert_array_equal(classes, ref)
    assert (classes[:20, :30] == 255).all()
    valid = classes != 255
    np.testing.assert_array_equal(classes[valid], expected[valid])
    assert out.attrs["flag_meanings"].split() == ["water", "trees", "built"]
    assert out.rio.crs == arr.rio.crs  # spatial_ref carried over


def test_probabilities_and_band_names_by_alias(tmp_path, linear_model):
    scene, _ = pattern_scene(96, 80)
    arr = rioxarray.open_rasterio(write_raster(tmp_path / "s.tif", scene)).assign_coords(
        band=["blue", "B03", "red", "nir"])  # B2, B3, B4, B8 by other names
    with pytest.warns(UserWarning, match="untrained"):
        ds = predict_xarray(arr, linear_model, probabilities=True)
    probs = ds["probabilities"].values
    assert probs.shape == (3, 96, 80) and np.allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(ds["classes"].values, np.argmax(probs, axis=0))


def test_wrong_units_are_refused_as_for_files(tmp_path):
    from geoseg.testing_sources import write_reference

    ref = write_reference(tmp_path / "ref.tif", size=120)
    arr = rioxarray.open_rasterio(ref)
    x1000 = (arr // 10).astype("uint16")
    x1000.attrs = arr.attrs
    with pytest.raises(InputError, match="input-scale 10"):
        predict_xarray(x1000, "default")
    ok = predict_xarray(x1000, "default", input_scale=10).values
    base = predict_xarray(arr, "default").values
    assert (ok == base).mean() >= 0.99
    # the real model through both entry points: the same map
    np.testing.assert_array_equal(base, _landcover(predict_scene(ref, "default", tmp_path / "o",
                                                                 progress=False).landcover))


def test_layout_errors(linear_model):
    import xarray as xr

    with pytest.raises(InputError, match=r"3-D \(band, y, x\)"):
        predict_xarray(xr.DataArray(np.zeros((2, 4, 8, 8)), dims=("time", "band", "y", "x")), linear_model)
    with pytest.raises(InputError, match="transpose"):
        predict_xarray(xr.DataArray(np.zeros((8, 8, 4)), dims=("y", "x", "band")), linear_model)
