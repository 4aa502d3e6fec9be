"""geoseg.vector.pixel_union: the ring-relinking union of edge-matched pixel polygons."""

import numpy as np
import pytest
import shapely

from geoseg.vector.components import label_components
from geoseg.vector.pixel_union import union_pixel_polygons


def canon(g):
    return shapely.normalize(shapely.simplify(shapely.normalize(g), 0))


def pixel_squares(mask):
    rows, cols = np.nonzero(mask)
    return shapely.box(cols, rows, cols + 1, rows + 1)


def largest_region(seed, shape=(24, 24), p=0.58):
    """The largest 4-connected region of a random pixel set: holes, pinches (diagonal touches)."""
    rng = np.random.default_rng(seed)
    on = rng.random(shape) < p
    lab = label_components(on.astype(np.uint8), on, 4)
    return lab.labels == int(np.argmax(lab.sizes))


@pytest.mark.parametrize("seed", range(12))
def test_union_of_pixel_squares_equals_geos_union(seed):
    region = largest_region(seed)
    squares = pixel_squares(region)
    got = union_pixel_polygons(squares)
    assert got is not None and got.geom_type == "Polygon" and got.is_valid
    want = shapely.union_all(squares)
    assert shapely.equals_exact(canon(got), canon(want), tolerance=0)
    assert got.area == region.sum()
    # no collinear vertices left: simplify(0) keeps every vertex
    assert shapely.get_num_coordinates(got) == shapely.get_num_coordinates(shapely.simplify(got, 0))


def test_hole_touching_the_shell_at_a_point_is_a_separate_ring():
    region = np.zeros((6, 6), bool)
    region[1:5, 1:5] = True
    region[1, 1] = False  # a notch in the outline ...
    region[2, 2] = False  # ... and a hole pixel touching it diagonally
    got = union_pixel_polygons(pixel_squares(region))
    assert got.is_valid and len(got.interiors) == 1
    assert shapely.touches(shapely.Polygon(got.interiors[0]), shapely.Polygon(got.exterior).boundary)
    assert shapely.equals(got, shapely.union_all(pixel_squares(region)))


def test_extra_holes_are_added():
    region = np.ones((6, 6), bool)
    hole = shapely.LinearRing([(2, 2), (4, 2), (4, 4), (2, 4)])
    got = union_pixel_polygons(pixel_squares(region), np.array([hole]))
    assert len(got.interiors) == 1 and got.area == 36 - 4


@pytest.mark.parametrize("pieces", [
    [shapely.box(0, 0, 1.5, 1), shapely.box(1.5, 0, 3, 1)],  # not on the pixel grid
    [shapely.box(0, 0, 1, 1), shapely.box(3, 0, 4, 1)],  # two regions: two shells
    [shapely.box(0, 0, 2, 1), shapely.box(1, 0, 3, 1)],  # overlapping pieces
    [shapely.LineString([(0, 0), (1, 1)])],  # not polygons
])
def test_input_it_does_not_handle_gives_none(pieces):
    assert union_pixel_polygons(np.array(pieces, dtype=object)) is None


UTM_TRANSFORM = (10.0, 0.0, 400_000.0, 0.0, -10.0, 5_200_000.0)
ROTATED = (7.0, 2.5, 300_000.5, -1.5, -9.0, 4_100_000.25)


@pytest.mark.parametrize("transform", [UTM_TRANSFORM, ROTATED])
@pytest.mark.parametrize("seed", range(8))
def test_numpy_finishing_equals_shapely(seed, transform):
    """normalized + multipolygon_wkb write the bytes that GEOS normalize + the affine + to_wkb write;
    measure gives GEOS' area and length of the transformed polygon."""
    from geoseg.vector.pixel_union import measure, multipolygon_wkb, normalized, pixel_rings, relink
    from geoseg.vector.tasks import pixel_to_crs, to_multipolygons

    squares = pixel_squares(largest_region(seed, shape=(30, 30)))
    rings = normalized(relink(pixel_rings(squares)))
    poly = union_pixel_polygons(squares)
    want = pixel_to_crs(shapely.normalize(to_multipolygons(np.array([poly]))), transform)[0]
    assert bytes(multipolygon_wkb(rings, transform)) == shapely.to_wkb(want)
    area, length = measure(rings, transform)
    assert area == pytest.approx(want.area, rel=1e-12) and length == pytest.approx(want.length, rel=1e-12)


def test_groups_relinked_together_equal_each_alone():
    """relink_groups keys vertices by group: groups that share vertices (touch diagonally, even overlap
    as pixel sets) come out exactly as relinked one by one."""
    from geoseg.vector.pixel_union import concat_rings, piece_rings, relink, relink_groups

    regions = [largest_region(seed, shape=(20, 20)) for seed in range(5)]
    per_group = [piece_rings(pixel_squares(r)) for r in regions]  # each group: its pixel squares
    alone = [relink(concat_rings(pieces)) for pieces in per_group]
    everything = concat_rings([p for pieces in per_group for p in pieces])
    ring_group = np.concatenate([np.full(p.n_rings, g) for g, pieces in enumerate(per_group) for p in pieces])
    together = relink_groups(everything, ring_group, len(regions))
    for a, b in zip(alone, together):
        assert a is not None and b is not None and len(a) == len(b)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_declined_group_does_not_take_the_others_down():
    """One group of overlapping pieces (not a coverage) in a batch: only that group gives None."""
    from geoseg.vector.pixel_union import concat_rings, piece_rings, relink, relink_groups

    good = piece_rings(pixel_squares(largest_region(1, shape=(12, 12))))
    bad = piece_rings(np.array([shapely.box(0, 0, 2, 1), shapely.box(1, 0, 3, 1)]))  # overlap along a segment
    ring_group = np.concatenate([np.full(p.n_rings, g) for g, pieces in enumerate((good, bad)) for p in pieces])
    got = relink_groups(concat_rings(good + bad), ring_group, 2)
    want = relink(concat_rings(good))
    assert got[1] is None and got[0] is not None
    assert all(np.array_equal(a, b) for a, b in zip(got[0], want))
