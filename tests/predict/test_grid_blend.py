"""Unit tests of the pure tiling and blending functions."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import ParameterError
from geoseg.io.grid import Window, axis_offsets, plan_blocks, plan_tiles
from geoseg.predict.blend import tile_weights, window_1d


@pytest.mark.parametrize("size", [1, 31, 32, 33, 100, 448, 512, 513, 1000, 4097])
@pytest.mark.parametrize("tile,overlap,align", [(512, 64, 32), (128, 32, 32), (64, 16, 1), (256, 128, 4)])
def test_axis_offsets_cover_scene_aligned(size, tile, overlap, align):
    length, offs = axis_offsets(size, tile, overlap, align)
    assert length % align == 0 and length <= tile
    assert all(o % align == 0 for o in offs)
    assert offs[0] == 0 and offs[-1] + length >= size
    assert offs[-1] + length - size < max(align, length)  # overhang is bounded
    for a, b in zip(offs, offs[1:]):
        assert b > a and a + length - b >= overlap  # consecutive tiles overlap by at least `overlap`
    if size > tile:
        assert offs[-1] + length - size < align  # the last tile is pulled back to the edge


def test_plan_tiles_flags_border_sides():
    plan = plan_tiles(1000, 700, 512, 64, 32)
    tiles = list(plan)
    assert len(tiles) == len(plan) == len(plan.row_offsets) * len(plan.col_offsets)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    first, last = tiles[0], tiles[-1]
    assert first.top and first.left and not first.bottom
    assert last.bottom and last.right and not last.top


@pytest.mark.parametrize("kwargs,msg", [
    (dict(tile_size=500, overlap=64), "multiple of the model's output stride 32"),
    (dict(tile_size=512, overlap=50), "multiple of the output stride"),
    (dict(tile_size=512, overlap=512), "smaller than the tile size"),
])
def test_plan_tiles_rejects_bad_parameters(kwargs, msg):
    with pytest.raises(ParameterError, match=msg):
        plan_tiles(1000, 1000, align=32, **kwargs)


def test_blocks_partition_the_scene():
    blocks = plan_blocks(1000, 700, 256)
    cover = np.zeros((1000, 700), int)
    for b in blocks:
        cover[b.window.row_off:b.window.row_end, b.window.col_off:b.window.col_end] += 1
    assert (cover == 1).all()
    with pytest.raises(ParameterError, match="multiple of 256"):
        plan_blocks(10, 10, 300)


def test_window_intersection_and_slices():
    a, b = Window(10, 20, 30, 40), Window(25, 50, 100, 100)
    i = a.intersection(b)
    assert i == Window(25, 50, 15, 10)
    rs, cs = i.slices_in(a)
    assert (rs, cs) == (slice(15, 30), slice(30, 40))
    assert a.intersection(Window(100, 100, 5, 5)) is None


@pytest.mark.parametrize("mode", ["cosine", "linear", "gaussian", "none"])
def test_window_is_positive_and_flat_at_scene_border(mode):
    w = window_1d(64, 16, mode, taper_start=False, taper_end=True)
    assert (w > 0).all()
    assert (w[:48] == 1).all()  # no taper on the border side, nor in the core
    if mode != "none":
        assert (np.diff(w[48:]) < 0).all()  # decreasing towards the interior edge


def test_cosine_ramps_of_neighbouring_tiles_sum_to_one():
    overlap = 32
    left = window_1d(128, overlap, "cosine", taper_start=False, taper_end=True)
    right = window_1d(128, overlap, "cosine", taper_start=True, taper_end=False)
    np.testing.assert_allclose(left[-overlap:] + right[:overlap], 1.0, atol=1e-12)


def test_tile_weights_shape_and_corner():
    plan = plan_tiles(300, 300, 128, 32, 32)
    t = list(plan)[4]  # an interior tile
    w = tile_weights(t, 32, "cosine")
    assert w.shape == (128, 128) and w.dtype == np.float32
    assert w[64, 64] == 1 and w[0, 0] < w[0, 64] < 1
    with pytest.raises(ParameterError, match="choose one of"):
        window_1d(10, 2, "hann", True, True)
