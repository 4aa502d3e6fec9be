"""Pixel-geometry helpers of the block tasks and the seam merge: GDAL's shapes as shapely arrays, MultiPolygons,
the canonical form (no collinear vertices, normalized), inner holes set aside and put back, seam densification,
the affine transform.  Pure shapely/numpy; every vertex is a pixel corner until :func:`pixel_to_crs`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import shapely


def shapes_to_polygons(items: Iterable[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
    """GeoJSON-like polygons from ``rasterio.features.shapes`` -> (shapely polygons, values).

    The vertex tuples go into float arrays every ``_SHAPES_BATCH`` vertices: a Python tuple of two
    floats takes about 110 bytes, 7x its 16 bytes in an array."""
    xy: list[np.ndarray] = []
    coords: list = []
    ring_sizes: list[int] = []
    rings_per: list[int] = []
    vals: list[float] = []

    def pack() -> None:
        xy.append(np.fromiter(itertools.chain.from_iterable(coords), dtype=np.float64,
                              count=2 * len(coords)).reshape(-1, 2))
        coords.clear()

    for geom, v in items:
        rings = geom["coordinates"]
        rings_per.append(len(rings))
        vals.append(v)
        for ring in rings:
            coords.extend(ring)
            ring_sizes.append(len(ring))
        if len(coords) >= _SHAPES_BATCH:
            pack()
    if not vals:
        return np.empty(0, dtype=object), np.zeros(0, np.int64)
    pack()
    rings_arr = shapely.linearrings(np.concatenate(xy), indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes))
    polys = shapely.polygons(rings_arr, indices=np.repeat(np.arange(len(rings_per)), rings_per))
    return polys, np.asarray(vals).astype(np.int64)


_SHAPES_BATCH = 1 << 16


def to_multipolygons(geoms: np.ndarray) -> np.ndarray:
    """Every geometry as a MultiPolygon (polygon parts only, lines/points from make_valid dropped)."""
    if len(geoms) == 0:
        return geoms
    parts, idx = shapely.get_parts(geoms, return_index=True)
    for _ in range(2):  # GeometryCollection -> MultiPolygon -> Polygon
        nested = shapely.get_type_id(parts) >= 4
        if not nested.any():
            break
        sub, sub_idx = shapely.get_parts(parts[nested], return_index=True)
        parts = np.concatenate([parts[~nested], sub])
        idx = np.concatenate([idx[~nested], idx[nested][sub_idx]])
    keep = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
    parts, idx = parts[keep], idx[keep]
    order = np.argsort(idx, kind="stable")
    out = shapely.multipolygons(parts[order], indices=idx[order])
    if len(out) != len(geoms):  # a geometry lost every polygon part (cannot happen for pixel polygons)
        raise RuntimeError("a polygon vanished while converting to MultiPolygon")
    return out


def drop_collinear(geoms: np.ndarray) -> np.ndarray:
    """MultiPolygons without vertices that lie on a straight line between their neighbours.

    Exact on integer pixel coordinates (the cross product is computed exactly), and linear in
    the number of vertices: the whole array goes through one ragged coordinate array.
    """
    if len(geoms) == 0:
        return geoms
    typ, xy, (ring_off, poly_off, geom_off) = shapely.to_ragged_array(to_multipolygons(geoms))
    n_rings = ring_off.size - 1
    starts, ends = ring_off[:-1], ring_off[1:] - 1  # ends: index of the closing (repeated) vertex
    d = np.diff(xy, axis=0)  # d[i]: segment from vertex i to vertex i + 1
    cross = np.zeros(xy.shape[0])
    # inside a ring: incoming segment d[i - 1], outgoing d[i]; a ring's first vertex comes in along
    # the ring's last segment (its closing vertex repeats the first)
    cross[1:-1] = d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0]
    d_in, d_out = d[ends - 1], d[starts]
    cross[starts] = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]
    keep = cross != 0
    keep[ends] = False
    csum = np.concatenate([[0], np.cumsum(keep)])
    kept_per_ring = csum[ends] - csum[starts]
    if (kept_per_ring < 3).any():  # cannot happen for pixel polygons; keep such rings untouched
        for k in np.flatnonzero(kept_per_ring < 3):
            keep[starts[k]:ends[k]] = True
        csum = np.concatenate([[0], np.cumsum(keep)])
        kept_per_ring = csum[ends] - csum[starts]
    sel = np.flatnonzero(keep)
    new_off = np.concatenate([[0], np.cumsum(kept_per_ring + 1)])
    first = new_off[:-1] - np.arange(n_rings)  # index into sel of each ring's first kept vertex
    src = np.empty(new_off[-1], dtype=np.int64)
    closing = np.zeros(new_off[-1], dtype=bool)
    closing[new_off[1:] - 1] = True
    src[~closing] = sel
    src[new_off[1:] - 1] = sel[first]
    out = xy[src]
    return shapely.from_ragged_array(typ, out, (new_off, poly_off, geom_off))


def canonical(geoms: np.ndarray) -> np.ndarray:
    """Normalized MultiPolygons without collinear vertices (the way GDAL writes polygon rings)."""
    if len(geoms) == 0:
        return geoms
    return shapely.normalize(drop_collinear(geoms))


def strip_inner_holes(geoms: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split pieces into (pieces without the holes that stay clear of the block border, holes, owner).

    Such holes cannot change when pieces are merged across the block border, so the union
    runs on the much lighter pieces and the holes are put back afterwards.
    """
    c0, r0, c1, r1 = box
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    exterior = np.ones(rings.size, dtype=bool)
    exterior[1:] = ring_part[1:] != ring_part[:-1]
    b = shapely.bounds(rings)
    touches = (b[:, 0] <= c0) | (b[:, 1] <= r0) | (b[:, 2] >= c1) | (b[:, 3] >= r1)
    keep = exterior | touches
    reduced_parts = shapely.polygons(rings[keep], indices=ring_part[keep])
    reduced = shapely.multipolygons(reduced_parts, indices=part_of)
    return reduced, rings[~keep], part_of[ring_part[~keep]]


def densify_seams(geoms: np.ndarray, xs: dict[int, np.ndarray], ys: dict[int, np.ndarray]) -> np.ndarray:
    """Give every ring segment that lies on a seam line a vertex at each of that line's breakpoints.

    ``xs``/``ys``: :func:`~geoseg.vector.components.seam_breakpoints` (the pixel corners along each
    seam where a piece on either side starts or ends).  Pieces from both sides of a seam then
    have identical vertices along it (an edge-matched coverage), so they can be merged by
    GEOS' linear-time coverage union instead of a full overlay, with a vertex only where some
    piece boundary meets the seam (not one per pixel).  Vectorised over one ragged array.
    """
    if len(geoms) == 0:
        return geoms
    typ, xy, offsets = shapely.to_ragged_array(geoms)
    ring_off = offsets[0]
    last = np.zeros(xy.shape[0], dtype=bool)
    last[ring_off[1:] - 1] = True
    a, b = xy[:-1], xy[1:]
    inner = ~last[:-1]  # (a, b) is a segment of one ring
    n = a.shape[0]
    count = np.zeros(n, dtype=np.int64)  # breakpoints strictly inside each segment
    start = np.zeros(n, dtype=np.int64)  # first of them in ``points``
    along = np.zeros(n, dtype=np.int64)  # the coordinate that varies along the segment
    ascending = np.zeros(n, dtype=bool)
    points, base = [], 0
    for axis, lines in ((0, xs), (1, ys)):  # x = X lines vary in y, and y = Y lines in x
        other = 1 - axis
        for coord, bp in lines.items():
            if bp.size == 0:
                continue
            sel = np.flatnonzero(inner & (a[:, axis] == coord) & (b[:, axis] == coord))
            if sel.size == 0:
                continue
            lo = np.minimum(a[sel, other], b[sel, other])
            hi = np.maximum(a[sel, other], b[sel, other])
            i0 = np.searchsorted(bp, lo, side="right")
            count[sel] = np.searchsorted(bp, hi, side="left") - i0
            start[sel] = base + i0
            along[sel] = other
            ascending[sel] = b[sel, other] > a[sel, other]
            points.append(bp)
            base += bp.size
    if not points or not count.any():
        return geoms
    pts = np.concatenate(points).astype(xy.dtype)
    reps = 1 + np.append(count, 0)  # vertex i is followed by count[i] new vertices
    out = np.repeat(xy, reps, axis=0)
    step = np.arange(out.shape[0]) - np.repeat(np.cumsum(reps) - reps, reps)
    new = np.flatnonzero(step > 0)
    seg = np.repeat(np.arange(reps.size), reps)[new]
    j = step[new]
    idx = np.where(ascending[seg], start[seg] + j - 1, start[seg] + count[seg] - j)
    out[new, along[seg]] = pts[idx]
    new_ring_off = np.concatenate([[0], np.cumsum(reps)[ring_off[1:] - 1]])
    return shapely.from_ragged_array(typ, out, (new_ring_off, *offsets[1:]))


def add_holes(geom, holes: np.ndarray):
    """Put holes (rings strictly inside ``geom``'s polygons) back into ``geom``."""
    if holes.size == 0:
        return geom
    parts = shapely.get_parts(geom)
    if parts.size == 1:
        p = parts[0]
        return shapely.Polygon(p.exterior, [*p.interiors, *holes])
    shells = shapely.polygons(shapely.get_exterior_ring(parts))
    # the innermost part around the whole hole: with 8-connectivity a part can lie in another's hole
    # (then that hole covers the part, and a point inside the hole may lie in the part)
    shell_i, hole_i = shapely.STRtree(shapely.polygons(holes)).query(shells, predicate="covers")
    order = np.lexsort((shapely.area(shells)[shell_i], hole_i))  # per hole, the smallest shell first
    shell_i, hole_i = shell_i[order], hole_i[order]
    first = np.ones(hole_i.size, dtype=bool)
    first[1:] = hole_i[1:] != hole_i[:-1]
    owner = np.full(holes.size, -1, dtype=np.int64)
    owner[hole_i[first]] = shell_i[first]
    if (owner < 0).any():  # cannot happen for holes of these parts
        raise RuntimeError("a hole lies outside every part of its polygon")
    new = [shapely.Polygon(p.exterior, [*p.interiors, *holes[owner == k]]) for k, p in enumerate(parts)]
    return shapely.MultiPolygon(new)


def pixel_to_crs(geoms: np.ndarray, transform: Sequence[float]) -> np.ndarray:
    """Apply the raster's affine transform (GDAL's evaluation order) to pixel-coordinate geometries."""
    a, b, c, d, e, f = transform

    def fn(xy: np.ndarray) -> np.ndarray:  # c + x * a + y * b, f + x * d + y * e; no full-size temporaries
        out = np.empty_like(xy)
        for col, (px, py, off) in enumerate(((a, b, c), (d, e, f))):
            np.multiply(xy[:, 0], px, out=out[:, col])
            np.add(off, out[:, col], out=out[:, col])
            if py:
                out[:, col] += xy[:, 1] * py
        return out

    return shapely.transform(geoms, fn)


def north_up(transform: Sequence[float]) -> bool:
    """No rotation or shear: pixel rows and columns map to constant y and x (exactly, in floats)."""
    return transform[1] == 0 and transform[3] == 0
