"""``geoseg vectorize``: block-wise polygons must equal a single-pass polygonize of the whole raster.

Every pattern is built so that polygons cross block seams (stripes, rings, checkerboards, a class
spanning every block, holes at block corners, a snake through all blocks), and the blocks are
smaller than the raster and often not aligned with the pattern.  The reference is
``rasterio.features.shapes`` (GDAL polygonize) and ``rasterio.features.sieve`` on the whole array.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from click.testing import CliRunner

from geoseg.errors import NotGeoreferencedError, OutputExistsError, ParameterError
from geoseg.vector.api import NotAClassRasterError, parse_area, parse_length, vectorize_raster
from geoseg.vector.components import label_components, sieve_blocks

UTM = "EPSG:32633"
RES = 10.0
ORIGIN = (500_000.0, 5_100_000.0)
NAMES = {0: "water", 1: "trees", 2: "grass", 3: "built"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def write_classes(path, data, *, nodata=255, names=NAMES, crs=UTM, transform=None, dtype=None):
    """A single-band class GeoTIFF on a 10 m UTM 33N grid with geoseg's CLASS_<v> band tags."""
    data = np.asarray(data)
    dtype = dtype or (data.dtype.name if data.dtype != np.int64 else "uint8")
    h, w = data.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": dtype}
    if crs is not None:
        profile.update(crs=crs, transform=transform or Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype), 1)
        if names:
            dst.update_tags(1, **{f"CLASS_{v}": n for v, n in names.items()})
    return path


def canon(g):
    """Comparable form: valid, normalized, no collinear vertices, MultiPolygon."""
    g = shapely.make_valid(g)
    g = shapely.normalize(shapely.simplify(shapely.normalize(g), 0))
    if g.geom_type == "Polygon":
        g = shapely.MultiPolygon([g])
    return g


def single_pass(data, valid, connectivity=4, transform=None):
    """Whole-raster GDAL polygonize -> {first-pixel id: (class, geometry in CRS coordinates)}."""
    t = transform or Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    h, w = data.shape
    out = {}
    for geom, v in rasterio.features.shapes(data.astype(np.int32), mask=valid, connectivity=connectivity):
        p = shapely.geometry.shape(geom)
        xy = shapely.get_coordinates(p)
        top = xy[:, 1].min()
        left = xy[xy[:, 1] == top, 0].min()
        key = int(top) * w + int(left)
        assert key not in out
        out[key] = (int(v), shapely.affinity.affine_transform(p, [t.a, t.b, t.d, t.e, t.c, t.f]))
    return out


def read(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyogrio.read_dataframe(path, **kw)


def vec(src, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vectorize_raster(src, out, **kw)


def assert_same_as_single_pass(df, data, valid, connectivity=4):
    ref = single_pass(data, valid, connectivity)
    assert len(df) == len(ref)
    assert sorted(df["id"]) == sorted(ref)
    assert set(df.geom_type) == {"MultiPolygon"}
    assert shapely.is_valid(df.geometry.values).all()
    for fid, cls, g in zip(df["id"], df["class"], df.geometry.values):
        rv, rg = ref[fid]
        assert cls == rv
        assert shapely.equals_exact(canon(g), canon(rg), tolerance=0), (fid, g.wkt, rg.wkt)
    # area per class from geometry attributes equals pixel counts exactly
    for v in np.unique(data[valid]):
        assert df.loc[df["class"] == v, "area_m2"].sum() == pytest.approx((data[valid] == v).sum() * RES * RES)


# --------------------------------------------------------------------------------------------
# patterns designed to cross seams
# --------------------------------------------------------------------------------------------


def stripes(h=61, w=83):
    r, c = np.mgrid[0:h, 0:w]
    return ((r // 4) % 2 + 2 * (((r + c) // 9) % 2)).astype(np.uint8)


def rings(h=70, w=70):
    r, c = np.mgrid[0:h, 0:w]
    return (np.maximum(abs(r - 33), abs(c - 37)) // 3 % 3).astype(np.uint8)


def checkerboard(h=50, w=64, cell=3):
    r, c = np.mgrid[0:h, 0:w]
    return (((r // cell) + (c // cell)) % 2).astype(np.uint8)


def spanning(h=64, w=80):
    """Class 1 is one polygon touching every 16-pixel block (a grid of lines), with islands of 2."""
    a = np.zeros((h, w), np.uint8)
    a[::10, :] = 1
    a[:, ::7] = 1
    a[3:6, 3:5] = 2
    return a


def corner_holes(h=48, w=48):
    """A forest square with holes centred on block corners (block size 16) and a nodata hole."""
    a = np.zeros((h, w), np.uint8)
    a[4:44, 4:44] = 1
    a[14:18, 14:18] = 2  # hole straddling the corner (16, 16)
    a[31:33, 31:33] = 0  # hole exactly at the corner (32, 32), other class
    a[16, 33] = 255  # nodata pixel inside
    return a


def snake(h=40, w=40):
    """One long 1-pixel-wide path winding through every block, on a 3-class background."""
    a = ((np.arange(w)[None, :] // 5 + np.arange(h)[:, None] // 5) % 2 * 2).astype(np.uint8)
    for r in range(1, h - 1, 4):
        a[r, 1:w - 1] = 1
        a[r:r + 4, (w - 2) if (r // 4) % 2 == 0 else 1] = 1
    return a


def noisy(h=57, w=71, seed=7):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (h // 6 + 1, w // 6 + 1))
    a = np.kron(coarse, np.ones((6, 6), int))[:h, :w].astype(np.uint8)
    a[rng.random((h, w)) < 0.15] = rng.integers(0, 4)
    a[rng.random((h, w)) < 0.03] = 255
    return a


PATTERNS = {"stripes": stripes, "rings": rings, "checkerboard": checkerboard, "spanning": spanning,
            "corner_holes": corner_holes, "snake": snake, "noisy": noisy}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("block_size", [16, 23])
def test_blocks_equal_single_pass(tmp_path, name, block_size):
    data = PATTERNS[name]()
    valid = data != 255
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / "lc.gpkg", block_size=block_size, workers=2)
    assert r.blocks >= 4 and r.extra["merged_polygons"] > 0  # seams were really crossed
    # every multi-piece polygon was joined by relinking its rings (geoseg.vector.pixel_union), none by GEOS
    assert r.extra["relinked_unions"] > 0 and r.extra["geos_unions"] == 0
    assert_same_as_single_pass(read(r.output), data, valid)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_merged_polygons_finished_in_numpy_are_byte_identical(tmp_path, name, monkeypatch):
    """Large merged polygons are finished in numpy (geoseg.vector.pixel_union) instead of GEOS: same output."""
    data = PATTERNS[name]()
    src = write_classes(tmp_path / "lc.tif", data)
    geos = read(vec(src, tmp_path / "geos.gpkg", block_size=16, scheduler="threads").output)
    monkeypatch.setattr("geoseg.vector.merge.NUMPY_FINISH_VERTICES", 0)
    numpy_ = read(vec(src, tmp_path / "numpy.gpkg", block_size=16, scheduler="threads").output)
    assert (numpy_.drop(columns="geometry") == geos.drop(columns="geometry")).all().all()
    assert (shapely.to_wkb(numpy_.geometry.values) == shapely.to_wkb(geos.geometry.values)).all()


def test_geos_fallback_when_relinking_declines(tmp_path, monkeypatch):
    """If geoseg.vector.pixel_union.relink_groups declines a group, GEOS joins the (compactly held) pieces instead."""
    data = PATTERNS["noisy"]()
    src = write_classes(tmp_path / "lc.tif", data)
    monkeypatch.setattr("geoseg.vector.merge.relink_groups", lambda rings, ring_group, n: [None] * n)
    r = vec(src, tmp_path / "lc.gpkg", block_size=16, scheduler="threads")
    assert r.extra["relinked_unions"] == 0 and r.extra["geos_unions"] > 0
    assert_same_as_single_pass(read(r.output), data, data != 255)


@pytest.mark.parametrize("name", ["checkerboard", "noisy", "corner_holes"])
def test_blocks_equal_single_pass_8_connected(tmp_path, name):
    data = PATTERNS[name]()
    valid = data != 255
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / "lc.gpkg", block_size=16, connectivity=8)
    df = read(r.output)
    assert_same_as_single_pass(df, data, valid, connectivity=8)
    if name != "corner_holes":
        assert len(df) < len(single_pass(data, valid, 4))  # 8-connectivity really joined diagonals


SAMPLE_LABEL = Path(__file__).resolve().parents[2] / "tiles" / "hongkong_20160927" / "dw_label.tif"


@pytest.mark.parametrize("connectivity", [4, 8])
def test_real_labels_equal_single_pass_and_stay_valid_simplified(tmp_path, connectivity):
    """The shipped Dynamic World label (EPSG:4326: areas in a local equal-area CRS) in 100-px blocks:
    equal to the single pass, and valid after coverage simplification (real edges, real seams)."""
    with rasterio.open(SAMPLE_LABEL) as src:
        data, valid, t = src.read(1), src.read_masks(1) > 0, src.transform
    r = vec(SAMPLE_LABEL, tmp_path / "lc.gpkg", block_size=100, connectivity=connectivity, scheduler="threads")
    df = read(r.output)
    assert r.extra["merged_polygons"] > 50
    ref = single_pass(data, valid, connectivity, transform=t)
    assert sorted(df["id"]) == sorted(ref) and shapely.is_valid(df.geometry.values).all()
    for fid, g in zip(df["id"], df.geometry.values):
        assert shapely.equals_exact(canon(g), canon(ref[fid][1]), tolerance=1e-9), fid
    simple = read(vec(SAMPLE_LABEL, tmp_path / "s.gpkg", block_size=100, connectivity=connectivity,
                      simplify="1.5px", scheduler="threads").output)
    g = simple.geometry.values
    assert len(simple) == len(df) and shapely.is_valid(g).all()
    footprint = shapely.union_all(df.geometry.values)
    assert shapely.area(g).sum() == pytest.approx(footprint.area, rel=1e-9)  # no overlaps
    assert shapely.symmetric_difference(shapely.union_all(g), footprint).area < 1e-9 * footprint.area  # no gaps


@pytest.mark.parametrize("simplify", [None, "1.5px"])
def test_rotated_grid_stays_valid_and_seamless(tmp_path, simplify, monkeypatch):
    """A rotated geotransform (b, d != 0): the merged polygons take the GEOS finish (no numpy WKB), the
    transformed polygons are checked, and the result equals the single pass."""
    monkeypatch.setattr("geoseg.vector.merge.NUMPY_FINISH_VERTICES", 0)  # would pick numpy if allowed
    t = Affine(8.0, 3.0, ORIGIN[0], 2.5, -9.0, ORIGIN[1])
    data = PATTERNS["noisy"]()
    src = write_classes(tmp_path / "lc.tif", data, transform=t)
    df = read(vec(src, tmp_path / "lc.gpkg", block_size=16, simplify=simplify, scheduler="threads").output)
    assert shapely.is_valid(df.geometry.values).all()
    if simplify is None:
        ref = single_pass(data, data != 255, transform=t)
        assert sorted(df["id"]) == sorted(ref)
        for fid, g in zip(df["id"], df.geometry.values):
            assert shapely.equals_exact(canon(g), canon(ref[fid][1]), tolerance=1e-6), fid


def test_8_connected_island_in_a_hole_keeps_its_own_hole(tmp_path):
    """8-connectivity: an island joined to the surrounding polygon by a diagonal chain sits in one of
    its holes and has a hole itself.  Putting the set-aside holes back must give the island's hole to
    the island (the innermost part around it), not to the outer part (a hole in a hole: invalid;
    found on real data)."""
    data = np.ones((64, 64), np.uint8)  # the polygon spans all four 32-px blocks
    data[4:21, 4:21] = 0  # a hole inside block 0, clear of its border
    data[6:17, 6:17] = 1  # an island in it ...
    data[4, 4] = data[5, 5] = 1  # ... joined to the outer part diagonally only
    data[10:13, 10:13] = 2  # the island's own hole
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / "lc.gpkg", block_size=32, connectivity=8, scheduler="threads")
    df = read(r.output)
    assert r.extra["merged_polygons"] >= 1
    assert_same_as_single_pass(df, data, data != 255, connectivity=8)


def test_polygon_spanning_all_blocks_is_one_feature_with_holes(tmp_path):
    data = spanning()
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / "lc.gpkg", block_size=16)
    df = read(r.output)
    trees = df[df["class"] == 1]
    assert len(trees) == 1
    g = trees.geometry.iloc[0]
    shell = shapely.Polygon(g.geoms[0].exterior)
    enclosed = shapely.within(df[df["class"] == 0].geometry.values, shell).sum()
    assert len(g.geoms) == 1 and len(g.geoms[0].interiors) == enclosed > 20
    assert trees["area_m2"].iloc[0] == (data == 1).sum() * 100


def test_hole_at_block_corner_is_kept(tmp_path):
    data = corner_holes()
    src = write_classes(tmp_path / "lc.tif", data)
    df = read(vec(src, tmp_path / "lc.gpkg", block_size=16).output)
    forest = df[df["class"] == 1].geometry.iloc[0].geoms[0]
    assert len(forest.interiors) == 3  # two class holes and the nodata pixel
    assert forest.area == pytest.approx(((data == 1).sum()) * 100)


def test_same_result_for_any_block_size_and_scheduler(tmp_path):
    data = noisy()
    src = write_classes(tmp_path / "lc.tif", data)
    outs = []
    for bs, sched in ((7, "threads"), (32, "synchronous"), (4096, "threads"), (20, "processes")):
        df = read(vec(src, tmp_path / f"o{bs}.gpkg", block_size=bs, scheduler=sched, workers=2).output)
        outs.append({i: canon(g) for i, g in zip(df["id"], df.geometry.values)})
    for o in outs[1:]:
        assert o.keys() == outs[0].keys()
        assert all(shapely.equals_exact(o[k], outs[0][k], 0) for k in o)


_POOL_SPY = """
import sys, threading
import geoseg.vector.api as V
real = V._process_pool
def spy(workers):
    pool = real(workers)
    print("POOL", pool._mp_context.get_start_method())
    return pool
V._process_pool = spy
stop = threading.Event()
if sys.argv[3] == "busy":  # another thread alive: forking would be unsafe
    threading.Thread(target=stop.wait, daemon=True).start()
V.vectorize_raster(sys.argv[1], sys.argv[2], block_size=16, scheduler="processes", workers=2, min_area=300,
                   progress=sys.argv[3] == "progress")  # a progress bar must not start a thread
stop.set()
"""


@pytest.mark.slow
@pytest.mark.parametrize("busy", ["alone", "busy", "progress"])
def test_process_workers_are_forked_only_when_no_other_thread_runs(tmp_path, busy):
    """Worker processes are forked when no other thread is alive (the block workers, then one writer);
    otherwise the blocks run on threads and this process writes (forking a multi-threaded process can
    deadlock; fresh interpreters would re-import the caller's __main__).  Both give the threaded
    result, sieve included."""
    src = write_classes(tmp_path / "lc.tif", noisy())
    out = tmp_path / "p.gpkg"
    run = subprocess.run([sys.executable, "-c", _POOL_SPY, str(src), str(out), busy], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    pools = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("POOL")]
    assert pools == (["fork", "fork"] if busy != "busy" else [])  # the block workers, then the writer
    ref = read(vec(src, tmp_path / "t.gpkg", block_size=16, scheduler="threads", min_area=300).output)
    got = read(out)
    want = {i: canon(g) for i, g in zip(ref["id"], ref.geometry.values)}
    have = {i: canon(g) for i, g in zip(got["id"], got.geometry.values)}
    assert have.keys() == want.keys()
    assert all(shapely.equals_exact(have[k], want[k], 0) for k in have)


# --------------------------------------------------------------------------------------------
# sieve
# --------------------------------------------------------------------------------------------


def _sieve_cases():
    rng = np.random.default_rng(11)
    for k in range(12):
        h, w = rng.integers(20, 50, 2)
        coarse = rng.integers(0, 3, (h // 4 + 1, w // 4 + 1))
        a = np.kron(coarse, np.ones((4, 4), int))[:h, :w].astype(np.uint8)
        a[rng.random((h, w)) < 0.25] = rng.integers(0, 4)
        valid = rng.random((h, w)) > (0.05 if k % 3 == 0 else 0)
        yield a, valid, int(rng.integers(2, 10)), 4 if k % 2 == 0 else 8
    # a chain: salt-and-pepper under one big strip; every speck merges through a chain of specks
    a = np.tile(np.array([[1, 2], [3, 1]], np.uint8), (20, 15))
    a[:2, :] = 0
    yield a, np.ones(a.shape, bool), 4, 4
    # two big neighbours of different sizes far apart, a small patch between them
    a = np.zeros((30, 40), np.uint8)
    a[:, 20:] = 1
    a[:, 35:] = 2
    a[14:16, 19:21] = 3
    yield a, np.ones(a.shape, bool), 6, 4


@pytest.mark.parametrize("case", list(range(14)))
def test_blocked_sieve_equals_whole_raster_sieve(case):
    a, valid, size, conn = list(_sieve_cases())[case]
    ref = rasterio.features.sieve(a, size, mask=valid, connectivity=conn)
    assert not np.array_equal(ref, a)  # the sieve does something here
    for bs in (3, 8, 13, 64):
        np.testing.assert_array_equal(sieve_blocks(a, valid, size, conn, bs), ref, err_msg=f"block size {bs}")


@pytest.mark.parametrize("case", [0, 1, 5, 12])
def test_components_after_sieve_are_derived_exactly(case):
    """apply_sieve derives the post-sieve components from the pre-sieve ones; check against relabelling."""
    from geoseg.vector.components import BlockGrid, apply_sieve, plan_sieve, scan_block

    a, valid, size, conn = list(_sieve_cases())[case]
    grid = BlockGrid(*a.shape, 8)
    windows = [(w.row_off, w.col_off, w.height, w.width) for w in grid.windows()]
    scans = [scan_block(a[r:r + h, c:c + w], valid[r:r + h, c:c + w], r, c, a.shape[1], size, conn)
             for r, c, h, w in windows]
    plan = plan_sieve(grid, scans, size, conn)
    assert plan.changed_components > 0
    for i, (r, c, h, w) in enumerate(windows):
        v, m = a[r:r + h, c:c + w], valid[r:r + h, c:c + w]
        before = label_components(v, m, conn)
        runs = scans[i].labels((h, w))  # the scan's components, rebuilt from their run encoding
        np.testing.assert_array_equal(runs.labels, before.labels)
        np.testing.assert_array_equal(runs.first, before.first)
        out, lab = apply_sieve(v, m, conn, plan.pieces[i], plan.new_values[i], scans[i].adj_a, scans[i].adj_b, runs)
        ref = label_components(out, m, conn)
        np.testing.assert_array_equal(lab.labels, ref.labels)
        np.testing.assert_array_equal(lab.values, ref.values)
        np.testing.assert_array_equal(lab.sizes, ref.sizes)
        np.testing.assert_array_equal(lab.first, ref.first)


@pytest.mark.parametrize("min_area, pixels", [("0.05ha", 5), ("500m2", 5), (1200, 12)])
def test_min_area_sieves_then_polygonizes_seamlessly(tmp_path, min_area, pixels):
    data = noisy()
    valid = data != 255
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / "lc.gpkg", block_size=16, min_area=min_area)
    assert r.sieve_pixels == pixels
    sieved = rasterio.features.sieve(data, pixels, mask=valid, connectivity=4)
    assert not np.array_equal(sieved, data)
    assert_same_as_single_pass(read(r.output), sieved, valid)


def test_sieve_merges_small_patch_into_neighbour_without_hole(tmp_path):
    data = np.ones((40, 40), np.uint8)
    data[10:12, 15:17] = 2  # 4 px = 400 m² < 500 m², at a block corner
    src = write_classes(tmp_path / "lc.tif", data)
    df = read(vec(src, tmp_path / "lc.gpkg", block_size=11, min_area="500m2").output)
    assert list(df["class"]) == [1]
    assert len(df.geometry.iloc[0].geoms[0].interiors) == 0
    df = read(vec(src, tmp_path / "keep.gpkg", block_size=11, min_area="400m2").output)
    assert sorted(df["class"]) == [1, 2]


def test_parse_units():
    assert parse_area("0.5ha") == 5000 and parse_area("5000") == 5000 and parse_area("2 km2") == 2e6
    assert parse_length("10") == (10.0, "m") and parse_length("1.5px") == (1.5, "px")
    for bad in ("ten", "5 acres", "-1"):
        with pytest.raises(ParameterError):
            parse_area(bad)
    with pytest.raises(ParameterError):
        parse_length("3 furlongs")


# --------------------------------------------------------------------------------------------
# simplification keeps a coverage
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, tolerance", [("noisy", 15), ("rings", 40), ("corner_holes", 40), ("stripes", "2px")])
def test_simplified_coverage_has_no_gaps_or_overlaps(tmp_path, name, tolerance):
    data = PATTERNS[name]()
    valid = data != 255
    src = write_classes(tmp_path / "lc.tif", data)
    plain = read(vec(src, tmp_path / "plain.gpkg", block_size=16).output).set_index("id")
    df = read(vec(src, tmp_path / "simple.gpkg", block_size=16, simplify=tolerance).output).set_index("id")
    g = df.geometry.values
    assert shapely.is_valid(g).all() and set(df.geom_type) == {"MultiPolygon"}
    assert sorted(df.index) == sorted(plain.index)
    changed = ~shapely.equals(g, plain.loc[df.index].geometry.values)
    assert changed.sum() >= len(df) // 3  # the simplification really moved edges
    if name == "noisy":
        assert shapely.get_num_coordinates(g).sum() < 0.85 * shapely.get_num_coordinates(plain.geometry.values).sum()
    valid_area = valid.sum() * RES * RES
    assert shapely.union_all(g).area == pytest.approx(valid_area, rel=1e-9)
    assert shapely.area(g).sum() == pytest.approx(valid_area, rel=1e-9)  # sum == union: no overlap
    i, j = shapely.STRtree(g).query(g, predicate="intersects")
    keep = i < j
    assert shapely.area(shapely.intersection(g[i[keep]], g[j[keep]])).max(initial=0) < 1e-6
    # the footprint (raster valid area) is unchanged: no gap opened at the edges or at nodata
    footprint = shapely.union_all(plain.geometry.values)
    assert shapely.symmetric_difference(shapely.union_all(g), footprint).area < 1e-6


def test_simplified_pieces_stay_edge_matched_on_long_seams(tmp_path):
    """Stripes cross a seam and are cut into two below it, so a piece above meets two pieces below
    along seam edges of 22-123 px.  GEOS' segmentize writes points like 14.999999999999998 on such
    edges, where the other side has 15.0: the sides no longer matched and the merged polygons came
    out invalid (found on real data; fixed by rounding the segmentized pixel vertices)."""
    widths = [22, 23, 25, 26, 29, 35, 38, 39, 41, 43, 45, 47, 49, 51, 55, 59, 67, 71, 77, 83, 89, 97, 101, 123]
    cols = np.concatenate([np.full(w, 1 + k % 2, np.uint8) for k, w in enumerate(widths)])
    data = np.tile(cols, (64, 1))
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    data[32:48, starts + np.array(widths) // 3] = 3  # below the seam at row 32 every stripe is cut in two
    src = write_classes(tmp_path / "lc.tif", data, names={v: f"c{v}" for v in range(4)})
    plain = read(vec(src, tmp_path / "plain.gpkg", block_size=32, scheduler="threads").output)
    r = vec(src, tmp_path / "simple.gpkg", block_size=32, simplify="2px", scheduler="threads")
    df = read(r.output)
    assert r.extra["merged_polygons"] >= len(widths)
    assert shapely.is_valid(df.geometry.values).all()
    assert len(df) == len(plain) and (shapely.get_num_geometries(df.geometry.values) == 1).all()


# --------------------------------------------------------------------------------------------
# attributes, ids, classes, nodata
# --------------------------------------------------------------------------------------------


def test_attributes_and_stable_ids(tmp_path):
    data = np.zeros((30, 40), np.uint8)
    data[5:8, 10:14] = 1  # 3 x 4 px = 30 m x 40 m
    data[20:30, 0:40] = 3
    src = write_classes(tmp_path / "lc.tif", data)
    df = read(vec(src, tmp_path / "lc.gpkg", block_size=9).output).set_index("id")
    box = df.loc[5 * 40 + 10]
    assert box["class"] == 1 and box["class_name"] == "trees"
    assert box["area_m2"] == pytest.approx(1200) and box["area_ha"] == pytest.approx(0.12)
    assert box["perimeter_m"] == pytest.approx(140)
    assert df.loc[20 * 40]["class_name"] == "built" and df.loc[0]["class_name"] == "water"
    assert df.loc[0]["perimeter_m"] == pytest.approx(2 * (400 + 200) + 140)  # outer ring + hole
    # ids do not depend on block size or on the class filter
    df2 = read(vec(src, tmp_path / "lc2.gpkg", block_size=64, classes="trees,3").output).set_index("id")
    assert sorted(df2.index) == [5 * 40 + 10, 20 * 40]
    assert shapely.equals(df2.loc[20 * 40].geometry, df.loc[20 * 40].geometry)


def test_classes_filter_by_name_and_value(tmp_path):
    data = noisy()
    src = write_classes(tmp_path / "lc.tif", data)
    all_df = read(vec(src, tmp_path / "all.gpkg", block_size=16).output)
    df = read(vec(src, tmp_path / "f.gpkg", block_size=16, classes="water,2").output)
    assert set(df["class"]) == {0, 2}
    assert len(df) == int(all_df["class"].isin([0, 2]).sum())
    with pytest.raises(ParameterError, match="unknown class 'forest'"):
        vec(src, tmp_path / "x.gpkg", classes="forest")
    # a value that does not occur gives an empty layer and says so
    with pytest.warns(UserWarning, match="--classes 42: no such value in .*values present: 0, 1, 2"):
        r = vectorize_raster(src, tmp_path / "y.gpkg", block_size=16, classes="42")
    assert r.features == 0


def test_nodata_is_never_vectorized(tmp_path):
    data = noisy()
    data[20:40, 30:50] = 255
    valid = data != 255
    src = write_classes(tmp_path / "lc.tif", data)
    df = read(vec(src, tmp_path / "lc.gpkg", block_size=16).output)
    assert 255 not in set(df["class"])
    hole = shapely.box(ORIGIN[0] + 300, ORIGIN[1] - 400, ORIGIN[0] + 500, ORIGIN[1] - 200)
    assert shapely.area(shapely.intersection(df.geometry.values, hole)).sum() == 0
    assert df["area_m2"].sum() == pytest.approx(valid.sum() * 100)


def test_unnamed_class_gets_generated_name_and_warning(tmp_path):
    data = np.zeros((20, 20), np.uint8)
    data[5:10, 5:10] = 7
    src = write_classes(tmp_path / "lc.tif", data)
    with pytest.warns(UserWarning, match="class value\\(s\\) 7 have no name"):
        r = vectorize_raster(src, tmp_path / "lc.gpkg")
    df = read(r.output)
    assert set(df["class_name"]) == {"water", "class_7"}


def test_many_unnamed_values_give_a_short_warning_with_a_hint(tmp_path):
    """An image band mistaken for a class raster: the warning lists ten values, counts the rest and asks."""
    data = np.arange(20 * 20, dtype=np.uint16).reshape(20, 20)
    src = write_classes(tmp_path / "img.tif", data, nodata=None, names={}, dtype="uint16")
    with pytest.warns(UserWarning) as record:
        r = vectorize_raster(src, tmp_path / "img.gpkg")
    (message,) = [str(w.message) for w in record if "have no name" in str(w.message)]
    assert message.startswith("class value(s) 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 390 more have no name")
    assert "400 distinct values: is this a class raster at all" in message and len(message) < 400
    assert r.features == 400


def test_mask_band_and_uint16_classes(tmp_path):
    data = (np.arange(30 * 30).reshape(30, 30) // 100).astype(np.uint16) + 1000
    src = write_classes(tmp_path / "lc.tif", data, nodata=None, names={}, dtype="uint16")
    with rasterio.open(src, "r+") as ds:
        mask = np.full((30, 30), 255, np.uint8)
        mask[:3] = 0
        ds.write_mask(mask)
    df = read(vec(src, tmp_path / "lc.gpkg", block_size=8).output)
    assert set(df["class"]) == set(np.unique(data[3:]))
    assert df["area_m2"].sum() == pytest.approx(27 * 30 * 100)


_WRITER_SPY = """
import json, os, sys
import geoseg.vector.api as V
real = V.write_staged
def spy(sink, paths, append, final=True, lean=False):
    r = real(sink, paths, append, final, lean)
    with open(sys.argv[3], "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "lean": lean, "pandas": "pandas" in sys.modules,
                             "pyogrio": "pyogrio" in sys.modules}) + "\\n")
    return r
V.write_staged = spy
V.vectorize_raster(sys.argv[1], sys.argv[2], block_size=16, scheduler="processes", workers=2, progress=False)
print(json.dumps({"pid": os.getpid(), "pyogrio": "pyogrio" in sys.modules, "pandas": "pandas" in sys.modules}))
"""


@pytest.mark.slow
def test_writer_process_loads_pyogrio_without_pandas(tmp_path):
    """With worker processes, one forked process writes, with pyogrio loaded lean (no pandas & co.),
    and the process that merges never imports pyogrio; the output is the threaded one."""
    src = write_classes(tmp_path / "lc.tif", noisy())
    log = tmp_path / "writes.jsonl"
    run = subprocess.run([sys.executable, "-c", _WRITER_SPY, str(src), str(tmp_path / "p.gpkg"), str(log)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    main = json.loads(run.stdout.strip().splitlines()[-1])
    writes = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(writes) == 2 and len({w["pid"] for w in writes}) == 1 and writes[0]["pid"] != main["pid"]
    assert all(w["lean"] and w["pyogrio"] and not w["pandas"] for w in writes)
    assert not main["pyogrio"] and not main["pandas"]
    got, ref = read(tmp_path / "p.gpkg"), read(vec(src, tmp_path / "t.gpkg", block_size=16, scheduler="threads").output)
    assert sorted(got["id"]) == sorted(ref["id"]) and got.crs == ref.crs


_LEAN = """
import multiprocessing, sys
from geoseg.vector.write import _import_pyogrio_without_dataframes as lean

def child(q):
    lean()
    import pyogrio.raw
    hidden = "pandas" not in sys.modules and "geopandas" not in sys.modules
    import pandas, pyproj  # still importable afterwards
    q.put(hidden)

if __name__ == "__main__":
    q = multiprocessing.get_context("fork").Queue()
    p = multiprocessing.get_context("fork").Process(target=child, args=(q,))
    p.start(); hidden_in_child = q.get(); p.join()
    lean()  # in a process that is not a worker: pyogrio loads whole
    import pyogrio
    print(hidden_in_child, "geopandas" in sys.modules, p.exitcode)
"""


@pytest.mark.slow
def test_lean_pyogrio_only_in_worker_processes(tmp_path):
    script = tmp_path / "lean.py"
    script.write_text(_LEAN)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.split() == ["True", "True", "0"], run.stderr + run.stdout


# --------------------------------------------------------------------------------------------
# formats, CRS, summary
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["gpkg", "fgb", "geojson", "parquet"])
def test_formats_round_trip(tmp_path, ext, monkeypatch):
    if ext == "parquet":
        pytest.importorskip("pyarrow")
    import geoseg.vector.write as W

    monkeypatch.setattr(W, "WRITE_CHUNK", 40)  # several appends
    data = noisy()
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / f"lc.{ext}", block_size=16, layer="cover")
    if ext == "parquet":
        import geopandas as gpd

        df = gpd.read_parquet(r.output)
    else:
        df = read(r.output)
    ref = read(vec(src, tmp_path / "ref.gpkg", block_size=16).output)
    assert len(df) == len(ref) == r.features > 40
    assert list(df.columns) == ["id", "class", "class_name", "area_m2", "area_ha", "perimeter_m", "geometry"]
    if ext == "geojson":
        assert df.crs.to_epsg() == 4326  # RFC 7946
        assert df.total_bounds[0] > 14 and df.total_bounds[2] < 16  # longitudes near 15 E
        back = df.to_crs(UTM).set_index("id")
        refi = ref.set_index("id")
        assert np.allclose(back.loc[refi.index].area, refi.area, rtol=1e-3)  # 7 decimals of a degree
        # RFC 7946 for every feature, the merged (seam) ones too: 7 decimals, counter-clockwise
        # shells, and no "name" member (it would leak the temporary file's name)
        text = Path(r.output).read_text()
        doc = json.loads(text)
        assert "name" not in doc and len(doc["features"]) == r.features
        assert not re.search(r"\d\.\d{8,}", text)
        shells = shapely.get_exterior_ring(shapely.get_parts(df.geometry.values))
        assert shapely.is_ccw(shells).all()
    else:
        assert df.crs.to_epsg() == 32633
        assert sorted(df["id"]) == sorted(ref["id"])
    if ext == "fgb":  # the layer name in the header is the file's, not the temporary file's
        assert pyogrio.list_layers(r.output)[:, 0].tolist() == ["lc"]
    if ext == "gpkg":
        assert pyogrio.list_layers(r.output)[:, 0].tolist() == ["cover"]
        assert pyogrio.read_info(r.output)["geometry_type"] == "MultiPolygon"


@pytest.mark.parametrize("ext", ["gpkg", "fgb", "geojson", "parquet"])
def test_every_polygon_crosses_a_seam(tmp_path, ext):
    """No block holds a whole polygon, so the blocks' write is empty and the merged polygons are
    all there is (the first write creates the layer, the second appends to it)."""
    data = np.zeros((8, 8), np.uint8)
    data[2:6, 2:6] = 1
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / f"lc.{ext}", block_size=4)
    if ext == "parquet":
        import geopandas as gpd

        df = gpd.read_parquet(r.output)
    else:
        df = read(r.output)
    assert r.features == len(df) == 2
    assert sorted(df["class"]) == [0, 1] and sorted(df["id"]) == [0, 2 * 8 + 2]
    assert sorted(os.listdir(tmp_path)) == sorted(["lc.tif", f"lc.{ext}", "lc.summary.csv", "lc.summary.json"])


def test_format_option_with_another_extension_writes_one_file(tmp_path):
    """--format decides the format whatever the name says (GDAL's FlatGeobuf driver would make a folder
    of a path without ".fgb")."""
    src = write_classes(tmp_path / "lc.tif", noisy())
    r = vec(src, tmp_path / "x.gpkg", format="fgb", block_size=16)
    assert (tmp_path / "x.gpkg").is_file() and pyogrio.read_info(r.output)["driver"] == "FlatGeobuf"
    assert len(read(r.output)) == r.features


def test_geographic_raster_areas_in_local_equal_area(tmp_path):
    data = np.zeros((40, 50), np.uint8)
    data[10:20, 10:30] = 1
    t = Affine(0.0001, 0, 2.35, 0, -0.0001, 48.85)  # ~7.3 m x 11.1 m pixels in Paris
    src = write_classes(tmp_path / "lc.tif", data, crs="EPSG:4326", transform=t)
    r = vec(src, tmp_path / "lc.gpkg", block_size=16)
    assert "laea" in r.area_crs
    df = read(r.output).set_index("id")
    assert df.crs.to_epsg() == 4326
    from pyproj import Geod

    geod_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(df.loc[10 * 50 + 10].geometry)[0])
    assert df.loc[10 * 50 + 10]["area_m2"] == pytest.approx(geod_area, rel=1e-4)
    assert 200 * 70 < df.loc[10 * 50 + 10]["area_m2"] < 200 * 90


def test_summary_files(tmp_path):
    data = noisy()
    valid = data != 255
    src = write_classes(tmp_path / "lc.tif", data)
    r = vec(src, tmp_path / "lc.gpkg", block_size=16)
    rows = (tmp_path / "lc.summary.csv").read_text().splitlines()
    assert rows[0] == "class,name,count,area_ha,share_percent"
    rec = json.loads((tmp_path / "lc.summary.json").read_text())
    df = read(r.output)
    for c in rec["classes"]:
        sel = df["class"] == c["value"]
        assert c["count"] == int(sel.sum())
        assert c["area_ha"] == pytest.approx((data[valid] == c["value"]).sum() * 100 / 1e4)
    assert sum(c["share"] for c in rec["classes"]) == pytest.approx(100)
    assert rec["crs"] == "EPSG:32633" and len(rows) == 1 + len(rec["classes"])


# --------------------------------------------------------------------------------------------
# bad input, no partial files
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tmp_path):
    f = write_classes(tmp_path / "f.tif", np.zeros((8, 8), np.float32), nodata=None)
    with pytest.raises(NotAClassRasterError, match="float32, not an integer class raster"):
        vectorize_raster(f, tmp_path / "o.gpkg")
    nocrs = write_classes(tmp_path / "n.tif", np.zeros((8, 8), np.uint8), crs=None)
    with pytest.raises(NotGeoreferencedError, match="no CRS"):
        vectorize_raster(nocrs, tmp_path / "o.gpkg")
    ok = write_classes(tmp_path / "ok.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(ParameterError, match="cannot tell the output format"):
        vectorize_raster(ok, tmp_path / "o.shp")
    (tmp_path / "o.gpkg").write_text("keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        vectorize_raster(ok, tmp_path / "o.gpkg")
    assert (tmp_path / "o.gpkg").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["f.tif", "n.tif", "o.gpkg", "ok.tif"]


def test_failure_leaves_no_partial_files(tmp_path, monkeypatch):
    """A write that fails after some chunks were written leaves nothing behind: no output, no
    summary, no staging folder (see test_failing_worker_process_leaves_nothing for worker processes)."""
    import geoseg.vector.write as W

    src = write_classes(tmp_path / "lc.tif", noisy())
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(W, "WRITE_CHUNK", 10)
    real = W._Sink.write

    def write_then_fail(self, table):
        if self.count >= 20:  # two chunks are in the file
            raise RuntimeError("disk full")
        real(self, table)

    monkeypatch.setattr(W._Sink, "write", write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        vec(src, out / "lc.gpkg", block_size=16, scheduler="threads", workers=2)
    assert os.listdir(out) == []


_FAILING_WORKER = """
import os, signal, sys
import geoseg.vector.tasks as T
import geoseg.vector.write as W
import geoseg.vector.api as V
from geoseg.errors import WorkerLostError

src, out, where = sys.argv[1], sys.argv[2], sys.argv[3]
main_pid = os.getpid()
W.WRITE_CHUNK = 10
real_write = W._Sink.write

def fail(*a, **k):
    assert os.getpid() != main_pid, "ran in the main process"
    if where.startswith("killed"):  # what the out-of-memory killer does
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("disk full")

def write_then_fail(self, table):
    if self.count >= 20:  # two chunks are in the file
        fail()
    real_write(self, table)

if where == "killed-block":
    T.shapes_to_polygons = fail
else:
    W._Sink.write = write_then_fail
try:
    V.vectorize_raster(src, out, block_size=16, scheduler="processes", workers=2, progress=False)
except (WorkerLostError, RuntimeError) as e:
    print(type(e).__name__, e)
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["killed-writer", "killed-block", "raises-writer"])
def test_failing_worker_process_leaves_nothing(tmp_path, where):
    """A worker process that raises, or is killed by a signal (the out-of-memory killer's SIGKILL),
    fails the run with one clear error (WorkerLostError: exit code 71 in the CLI) and leaves no
    output, summary or staging folder.  In a fresh process, so that workers are surely forked."""
    src = write_classes(tmp_path / "lc.tif", noisy())
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([sys.executable, "-c", _FAILING_WORKER, str(src), str(out / "lc.gpkg"), where],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    if where == "killed-writer":
        assert run.stdout.startswith("WorkerLostError the vectorize writer process was killed"), run.stdout
    elif where == "killed-block":
        assert run.stdout.startswith("WorkerLostError a vectorize worker process was killed"), run.stdout
        assert "--workers (was 2)" in run.stdout
    else:
        assert run.stdout.strip() == "RuntimeError disk full"
    assert os.listdir(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["processes", "threads"])
def test_corrupt_input_is_one_line_error(tmp_path, scheduler):
    """A raster whose tiles cannot be decoded fails with one line naming the block and the fix (exit 3),
    also from a worker process (GDAL's exception classes do not survive the trip back), and leaves nothing."""
    data = np.random.default_rng(0).integers(0, 3, (512, 512)).astype(np.uint8)
    path = tmp_path / "bad.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1, dtype="uint8", crs=UTM,
                       transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), tiled=True, blockxsize=128,
                       blockysize=128, compress="deflate") as dst:
        dst.write(data, 1)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3:len(raw) // 3 + len(raw) // 4] = b"\x55" * (len(raw) // 4)  # garbage in the tile data
    path.write_bytes(bytes(raw))
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([sys.executable, "-c", "from geoseg.cli import main; main()", "vectorize", str(path),
                          "-o", str(out / "lc.gpkg"), "--scheduler", scheduler, "--block-size", "128", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read rows") and "corrupt" in lines[0], run.stderr
    assert os.listdir(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_terminated_run_cleans_up_and_leaves_no_workers(tmp_path, sig):
    """SIGTERM (a scheduler's timeout) unwinds like Ctrl-C: exit 143, no staging folder or partial output,
    workers ended.  After SIGKILL nothing can clean up, but the workers still end with their parent
    instead of waiting for tasks forever."""
    import signal
    import time

    import psutil

    data = np.random.default_rng(1).integers(0, 3, (1500, 1500)).astype(np.uint8)  # slow to polygonize
    src = write_classes(tmp_path / "noise.tif", data)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "from geoseg.cli import main; main()", "vectorize", str(src), "-o",
                             str(out / "lc.gpkg"), "--block-size", "256", "--workers", "2", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    workers: list = []
    while time.time() < deadline and len(workers) < 2:  # the block workers have started
        workers = psutil.Process(proc.pid).children()
        time.sleep(0.05)
    assert len(workers) == 2 and proc.poll() is None
    os.kill(proc.pid, getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    if sig == "SIGTERM":
        assert proc.returncode == 143 and err.strip() == "Terminated: no output was written.", err
        assert os.listdir(out) == []


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _cli(*args):
    from geoseg.cli import cli

    return CliRunner().invoke(cli, ["vectorize", *map(str, args)])


@pytest.mark.slow
def test_cli_vectorize(tmp_path):
    src = write_classes(tmp_path / "landcover.tif", noisy())
    res = _cli(src, "-o", tmp_path / "lc.gpkg", "--min-area", "0.05ha", "--simplify", "10", "--block-size", "16")
    assert res.exit_code == 0, res.output
    assert "water" in res.output and "total" in res.output and "share" in res.output
    df = read(tmp_path / "lc.gpkg")
    assert len(df) > 10 and (tmp_path / "lc.summary.csv").exists() and (tmp_path / "lc.summary.json").exists()
    res = _cli(src, "-o", tmp_path / "lc.gpkg")
    assert res.exit_code == 5 and "already exists; pass --overwrite" in res.output
    res = _cli(src, "-o", tmp_path / "trees.data", "--format", "geojson", "--classes", "trees", "-q")
    assert res.exit_code == 0 and res.output == ""
    assert set(read(tmp_path / "trees.data", driver="GeoJSON")["class_name"]) == {"trees"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float", "nocrs", "missing", "badarea", "badclass"])
def test_cli_bad_input_is_one_line_without_traceback(tmp_path, kind):
    good = write_classes(tmp_path / "good.tif", noisy())
    args = {
        "float": [write_classes(tmp_path / "f.tif", np.zeros((8, 8), np.float32), nodata=None)],
        "nocrs": [write_classes(tmp_path / "n.tif", np.zeros((8, 8), np.uint8), crs=None)],
        "missing": [tmp_path / "nope.tif"],
        "badarea": [good, "--min-area", "half"],
        "badclass": [good, "--classes", "forest"],
    }[kind]
    res = _cli(*args, "-o", tmp_path / "o.gpkg")
    assert res.exit_code == (2 if kind.startswith("bad") else 3), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.output
    assert not (tmp_path / "o.gpkg").exists()


@pytest.mark.slow
def test_cli_warns_about_unnamed_class(tmp_path):
    src = write_classes(tmp_path / "lc.tif", np.full((10, 10), 9, np.uint8), names={})
    res = _cli(src, "-o", tmp_path / "lc.gpkg")
    assert res.exit_code == 0
    assert "warning: class value(s) 9 have no name" in res.output and "class_9" in res.output


def test_label_components_matches_gdal_polygon_count():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, (80, 90))
    valid = rng.random(a.shape) > 0.1
    for conn in (4, 8):
        lab = label_components(a, valid, conn)
        n = sum(1 for _ in rasterio.features.shapes(a.astype(np.int32), mask=valid, connectivity=conn))
        assert lab.count == n
        assert lab.sizes.sum() == valid.sum()


def test_gpkg_carries_the_rasters_palette_as_its_default_qgis_style(tmp_path):
    """A class raster with a colour table (geoseg's landcover.tif) gives a GeoPackage whose default style
    (layer_styles) is categorized on `class` with the raster's colours and class names; without a colour
    table no style is invented."""
    import sqlite3
    import xml.etree.ElementTree as ET

    data = noisy()
    src = write_classes(tmp_path / "lc.tif", data)
    plain = read(vec(src, tmp_path / "plain.gpkg", block_size=16).output)
    assert "layer_styles" not in {n for n, _ in pyogrio.list_layers(tmp_path / "plain.gpkg")}
    colours = {0: (65, 155, 223, 255), 1: (57, 125, 73, 255), 2: (196, 40, 27, 255), 3: (165, 155, 143, 255)}
    with rasterio.open(src, "r+") as dst:
        dst.write_colormap(1, colours)
    res = vec(src, tmp_path / "styled.gpkg", block_size=16)
    assert len(read(res.output)) == len(plain)  # the features are unchanged
    with sqlite3.connect(res.output) as con:
        rows = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("styled", 1)
    renderer = ET.fromstring(rows[0][2].split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class"
    cats = [(int(c.get("value")), c.get("label")) for c in renderer.findall("categories/category")]
    values = sorted(set(NAMES) | set(np.unique(data[data != 255]).tolist()))
    assert cats == [(v, NAMES.get(v, f"class_{v}")) for v in values]
    symbols = {s.get("name"): s.find(".//prop[@k='color']").get("v") for s in renderer.findall("symbols/symbol")}
    by_value = {int(c.get("value")): symbols[c.get("symbol")] for c in renderer.findall("categories/category")}
    assert by_value == {v: ",".join(map(str, colours[v])) for v in values}  # the raster's colour table
    # style=False (geoseg change's temporary polygons): no layer_styles table
    vec(src, tmp_path / "unstyled.gpkg", block_size=16, style=False)
    assert "layer_styles" not in {n for n, _ in pyogrio.list_layers(tmp_path / "unstyled.gpkg")}
