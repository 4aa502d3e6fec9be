"""Union of pixel polygons that meet along shared edges, by relinking their rings; numpy, no GEOS overlay.

The seam merge of :mod:`geoseg.vector.api` joins the pieces of one 4-connected region that GDAL
polygonized block by block.  The pieces have integer (pixel-corner) vertices and form an
edge-matched coverage (``densify_seams`` gives both sides of a seam the same vertices), so their
union is pure bookkeeping on the rings:

1. orient every ring so that the region lies on its left (shells counter-clockwise, holes
   clockwise, in the numbers' own axes);
2. drop every segment whose reverse also occurs: it is shared by two pieces and lies inside the
   union;
3. cut the rings at every vertex that more than one ring passes (the only places where rings of
   different pieces meet), giving chains, and relink the chains at those vertices.  Where two
   chains leave the same vertex (two region pixels touching diagonally), each incoming chain takes
   the sharpest right turn, i.e. it hugs the outside pixel: the outside is cut into its
   4-connected parts, which is how a valid polygon of a 4-connected region is written (a hole that
   touches the shell at a point is a separate ring);
4. the one ring with positive area is the shell, all others are holes.

GEOS' ``coverage_union_all`` does the same job through a planar graph of about 100 bytes per
vertex (measured on the merge of a 5.4 M-vertex polygon); on the polygon that spans a whole scene
that graph, not the polygon, set the peak memory of the merge.  Here the work arrays are a few
numbers per vertex, and the pieces wait for their group as :class:`PixelRings` (8 bytes per
vertex) instead of GEOS polygons.

:func:`relink` and :func:`union_pixel_polygons` return None instead of guessing whenever the input
is not what they expect (non-integer vertices, a part that is not a polygon, a segment shared the
wrong way, more than one shell, a ring through the same vertex twice); the caller then falls back
to GEOS.

The finishing functions (:func:`normalized`, :func:`measure`, :func:`multipolygon_wkb`) turn such
rings into exactly the bytes GEOS would write after ``normalize`` and the raster's affine
transform, without building the geometry: for a scene-spanning polygon, GEOS' copies (normalize,
transform, WKB) cost more than the polygon.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely

__all__ = ["PixelRings", "pixel_rings", "piece_rings", "concat_rings", "rings_geometry", "open_rings", "relink",
           "relink_groups", "union_pixel_polygons", "polygon_of_rings", "normalized", "measure", "multipolygon_wkb"]


@dataclass(frozen=True)
class PixelRings:
    """The rings of pixel polygons as flat arrays: integer vertices, each ring open (no closing vertex)."""

    x: np.ndarray  # int32
    y: np.ndarray  # int32
    off: np.ndarray  # ring r is vertices off[r]:off[r + 1]
    exterior: np.ndarray  # whether ring r is its polygon's exterior

    @property
    def n_rings(self) -> int:
        return self.off.size - 1


def pixel_rings(pieces: np.ndarray) -> PixelRings | None:
    """The rings of polygons with integer vertices, read straight from their coordinates (no ring
    copies); None if a part is not a polygon or a vertex is not an integer in int32 range."""
    return _rings_of_parts(shapely.get_parts(np.asarray(pieces, dtype=object)))


def _rings_of_parts(parts: np.ndarray) -> PixelRings | None:
    """:func:`pixel_rings` of single polygons (the parts of the pieces)."""
    if parts.size == 0 or (shapely.get_type_id(parts) != 3).any():
        return None
    _, xy, (ring_off, poly_off) = shapely.to_ragged_array(parts)
    del parts
    if xy.size and (xy.min() < 0 or xy.max() >= 2**31 - 1 or not np.array_equal(xy, np.round(xy))):
        return None
    n_rings = ring_off.size - 1
    keep = np.ones(xy.shape[0], dtype=bool)
    keep[ring_off[1:] - 1] = False  # the closing vertex repeats the first
    x = xy[keep, 0].astype(np.int32)
    y = xy[keep, 1].astype(np.int32)
    del xy, keep
    off = ring_off - np.arange(n_rings + 1)
    if (np.diff(off) < 3).any():
        return None
    exterior = np.zeros(n_rings, dtype=bool)
    exterior[poly_off[:-1]] = True
    return PixelRings(x, y, off, exterior)


def piece_rings(pieces: np.ndarray) -> list[PixelRings] | None:
    """:func:`pixel_rings` of each piece separately (compact copies: 8 bytes per vertex, where a
    GEOS polygon takes several times that); None if any piece is not a pixel polygon."""
    pieces = np.asarray(pieces, dtype=object)
    parts, part_of = shapely.get_parts(pieces, return_index=True)
    rings = _rings_of_parts(parts)
    if rings is None:
        return None
    ring_piece = np.repeat(part_of, np.diff(np.append(np.flatnonzero(rings.exterior), rings.n_rings)))
    bounds = np.searchsorted(ring_piece, np.arange(pieces.size + 1))
    out = []
    for k in range(pieces.size):
        r0, r1 = bounds[k], bounds[k + 1]
        v0, v1 = rings.off[r0], rings.off[r1]
        out.append(PixelRings(rings.x[v0:v1].copy(), rings.y[v0:v1].copy(), rings.off[r0:r1 + 1] - v0,
                              rings.exterior[r0:r1].copy()))
    return out


def concat_rings(items: list[PixelRings]) -> PixelRings:
    """One :class:`PixelRings` of several."""
    shift = np.cumsum([0] + [it.x.size for it in items[:-1]])
    return PixelRings(np.concatenate([it.x for it in items]), np.concatenate([it.y for it in items]),
                      np.concatenate([[0]] + [it.off[1:] + s for it, s in zip(items, shift)]),
                      np.concatenate([it.exterior for it in items]))


def rings_geometry(rings: PixelRings) -> shapely.MultiPolygon:
    """The MultiPolygon of :class:`PixelRings` (each exterior starts a polygon), as GEOS geometry."""
    xy = np.column_stack([rings.x, rings.y]).astype(np.float64)
    coords = np.insert(xy, rings.off[1:], xy[rings.off[:-1]], axis=0)  # close every ring
    ring_off = rings.off + np.arange(rings.n_rings + 1)
    poly_off = np.append(np.flatnonzero(rings.exterior), rings.n_rings)
    geom = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, coords,
                                     (ring_off, poly_off, np.array([0, poly_off.size - 1])))
    return geom[0]


def open_rings(rings: PixelRings) -> list[np.ndarray]:
    """The rings of one polygon as open (n, 2) integer arrays without collinear vertices, shell first."""
    return [_without_collinear(np.column_stack([rings.x[a:b], rings.y[a:b]]))
            for a, b in zip(rings.off[:-1], rings.off[1:])]


def _signed_areas(x: np.ndarray, y: np.ndarray, nxt: np.ndarray, ring_of: np.ndarray, n_rings: int) -> np.ndarray:
    """Twice the signed area of each ring (shoelace; positive = counter-clockwise in x/y).  In
    float64: exact while the partial sums stay below 2**53; only the sign is used."""
    area2 = np.zeros(n_rings)
    for a in range(0, x.size, _BATCH):  # in batches: five float arrays of every vertex would be 40 B each
        b = min(a + _BATCH, x.size)
        xa, ya = x[a:b].astype(np.float64), y[a:b].astype(np.float64)
        xn, yn = x[nxt[a:b]].astype(np.float64), y[nxt[a:b]].astype(np.float64)
        area2 += np.bincount(ring_of[a:b], weights=xa * yn - xn * ya, minlength=n_rings)
    return area2


def union_pixel_polygons(pieces: np.ndarray, holes: np.ndarray | None = None) -> shapely.Polygon | None:
    """The union of ``pieces`` (pixel polygons of one 4-connected region, edge-matched) as one Polygon.

    ``holes``: more interior rings for the result (rings strictly inside it), added as they are.
    None when the input is outside what this handles; see the module docstring.
    """
    rings = pixel_rings(pieces)
    joined = relink(rings) if rings is not None else None
    if joined is None:
        return None
    return polygon_of_rings(joined, holes)


def polygon_of_rings(rings: list[np.ndarray], holes: np.ndarray | None = None) -> shapely.Polygon:
    """A Polygon of open integer rings (shell first), plus optional hole geometries (LinearRings)."""
    closed = [np.vstack([r, r[:1]]).astype(np.float64) for r in rings]
    inner = shapely.linearrings(np.concatenate(closed[1:]), indices=np.repeat(np.arange(len(closed) - 1),
                                                                             [len(r) for r in closed[1:]])) \
        if len(closed) > 1 else np.empty(0, dtype=object)
    if holes is not None and len(holes):
        inner = np.concatenate([inner, np.asarray(holes, dtype=object)])
    return shapely.polygons(closed[0], holes=inner if len(inner) else None)


def relink(rings: PixelRings) -> list[np.ndarray] | None:
    """The rings of the union of edge-matched pixel polygons (steps 1-4 of the module docstring).

    Returns open rings of integer vertices without collinear vertices, the shell first (counter-
    clockwise) and then the holes (clockwise); None when the input is outside what this handles.
    """
    return relink_groups(rings, np.zeros(rings.n_rings, dtype=np.int64), 1)[0]


# long: memory-tuned (every array is freed as soon as its pass is done; one function keeps that visible)
def relink_groups(rings: PixelRings, ring_group: np.ndarray, n_groups: int) -> list[list[np.ndarray] | None]:
    """:func:`relink` of several groups at once: ``ring_group`` says which group (0..n_groups-1)
    each ring belongs to; returns one result per group (None: declined).  Vertex keys include the
    group, so groups never join, and the per-call cost is paid once for all (a block completes
    thousands of small groups)."""
    x, y, off, exterior = rings.x, rings.y, rings.off, rings.exterior
    n_rings = rings.n_rings
    n = x.size
    ring_of = np.repeat(np.arange(n_rings, dtype=np.int32), np.diff(off))
    itype = np.int32 if n < 2**31 - 1 else np.int64
    idx = np.arange(n, dtype=itype)
    nxt = idx + 1
    nxt[off[1:] - 1] = off[:-1]  # each ring's last vertex links back to its first

    # 1. orient: region on the left of every segment
    area2 = _signed_areas(x, y, nxt, ring_of, n_rings)
    flip = (area2 > 0) != exterior  # shells positive, holes negative
    if flip.any():
        sel = flip[ring_of]
        # reverse the vertex order of flipped rings: position k of ring r -> off[r+1] - 1 - (k - off[r])
        new_pos = idx.copy()
        r = ring_of[sel]
        new_pos[sel] = off[r + 1] - 1 - (idx[sel] - off[r])
        order = np.empty(n, dtype=itype)
        order[new_pos] = idx
        del new_pos, sel, r
        x, y = x[order], y[order]
        del order

    def one_by_one() -> list[list[np.ndarray] | None]:  # a check failed: find the group(s) that fail
        if n_groups == 1:
            return [None]
        return [relink(part) for part in _split_groups(rings, ring_group, n_groups)]

    # vertex keys (group, y, x), and the vertices that more than one ring of a group passes
    stride, rows = int(x.max()) + 2, int(y.max()) + 2
    if n_groups * rows * stride >= 2**62:  # keys would overflow: fewer groups per call
        return one_by_one()
    ring_group = np.asarray(ring_group, dtype=np.int64)
    key = ring_group[ring_of]  # in place from here: one int64 array of every vertex
    key *= rows
    key += y
    key *= stride
    key += x
    sorted_keys = np.sort(key)
    repeated = np.unique(sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]])
    del sorted_keys, idx
    junction = np.zeros(n, dtype=bool)
    if repeated.size:  # np.isin(key, repeated), in batches (isin sorts copies of every key)
        for a in range(0, n, _BATCH):
            kk = key[a:a + _BATCH]
            junction[a:a + _BATCH] = repeated[np.minimum(np.searchsorted(repeated, kk), repeated.size - 1)] == kk
        del kk  # a view: it would keep every key alive
    del repeated

    # 2. segments shared by two pieces (both ends are junctions): cancel both directions
    s_key = key
    cand = np.flatnonzero(junction & junction[nxt])
    cancelled = np.zeros(n, dtype=bool)
    if cand.size:
        e_key = key[nxt[cand]]
        lo, hi = np.minimum(s_key[cand], e_key), np.maximum(s_key[cand], e_key)
        by_segment = np.lexsort((hi, lo))
        lo, hi, seg = lo[by_segment], hi[by_segment], cand[by_segment]
        same = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1])
        if (same[1:] & same[:-1]).any():  # a segment in three rings: not a coverage
            return one_by_one()
        pair = np.flatnonzero(same)
        one, other = seg[pair], seg[pair + 1]
        if (s_key[one] == s_key[other]).any():  # two pieces overlap along a segment (same direction)
            return one_by_one()
        cancelled[one] = cancelled[other] = True

    # 3. chains: from a junction vertex along kept segments to the next junction vertex
    start = np.flatnonzero(junction & ~cancelled)  # positions where a chain begins (segment kept)
    intact = np.ones(n_rings, dtype=bool)
    intact[ring_of[junction]] = False
    # the end of each chain: the next junction position in the same ring (cyclically)
    jpos = np.flatnonzero(junction)
    ring_j = ring_of[jpos]
    k = np.searchsorted(jpos, start, side="right")
    same_ring = (k < jpos.size)
    same_ring[same_ring] = ring_j[k[same_ring]] == ring_of[start[same_ring]]
    first_j = jpos[np.searchsorted(ring_j, ring_of[start])]  # the ring's first junction position
    end = np.where(same_ring, jpos[np.minimum(k, jpos.size - 1)], first_j)
    # a chain's segments must all be kept: a cancelled segment starts only at junctions, and
    # chains start only at kept ones, so only the first segment could be cancelled (it is not)
    start_key, end_key = key[start], key[end]
    # direction of each chain's first and last segment
    d_out = np.column_stack([x[nxt[start]] - x[start], y[nxt[start]] - y[start]])
    prev = np.where(end == off[ring_of[end]], off[ring_of[end] + 1] - 1, end - 1)
    d_in = np.column_stack([x[end] - x[prev], y[end] - y[prev]])

    # link every chain to the chain leaving its end vertex; with several, the sharpest right turn
    n_ch = start.size
    succ = np.full(n_ch, -1, dtype=np.int64)
    by_start = np.argsort(start_key, kind="stable")
    sk = start_key[by_start]
    lo_i = np.searchsorted(sk, end_key, side="left")
    hi_i = np.searchsorted(sk, end_key, side="right")
    count = hi_i - lo_i
    if (count == 0).any():
        return one_by_one()
    single = count == 1
    succ[single] = by_start[lo_i[single]]
    for c in np.flatnonzero(~single).tolist():
        cands = by_start[lo_i[c]:hi_i[c]]
        dx, dy = d_in[c]
        ox, oy = d_out[cands, 0], d_out[cands, 1]
        turn = np.arctan2(dx * oy - dy * ox, dx * ox + dy * oy)  # > 0 left, < 0 right
        succ[c] = cands[np.argmin(turn)]
    if np.unique(succ).size != n_ch:  # not a one-to-one linking
        return one_by_one()

    # 4. walk the cycles and assemble each group's rings
    del key, s_key, junction, cancelled, nxt, jpos, ring_j, k, same_ring, first_j, end_key, d_out, d_in, prev
    out: list[list[np.ndarray] | None] = [[] for _ in range(n_groups)]
    chain_group = ring_group[ring_of[start]]
    seen = np.zeros(n_ch, dtype=bool)
    for c0 in range(n_ch):
        if seen[c0]:
            continue
        g = int(chain_group[c0])
        spans = []  # (first, end) vertex positions of the chains, in order (views: no copies yet)
        visited = []
        c = c0
        while not seen[c]:
            seen[c] = True
            visited.append(start_key[c])
            s, e = int(start[c]), int(end[c])
            if e > s:
                spans.append((s, e))
            else:  # wraps around the ring's end
                r = ring_of[s]
                spans += [(s, int(off[r + 1])), (int(off[r]), e)]
            c = succ[c]
        group_rings = out[g]
        if group_rings is None:
            continue
        if c != c0 or len(set(visited)) != len(visited):  # not a simple closed ring
            out[g] = None
            continue
        ring = np.empty((sum(e - s for s, e in spans), 2), dtype=x.dtype)
        at = 0
        for s, e in spans:
            ring[at:at + e - s, 0], ring[at:at + e - s, 1] = x[s:e], y[s:e]
            at += e - s
        group_rings.append(_without_collinear(ring))
        del ring
    for r in np.flatnonzero(intact).tolist():
        group_rings = out[int(ring_group[r])]
        if group_rings is not None:
            group_rings.append(_without_collinear(np.column_stack([x[off[r]:off[r + 1]], y[off[r]:off[r + 1]]])))
    for g, group_rings in enumerate(out):
        if group_rings is None:
            continue
        shells = [i for i, r in enumerate(group_rings) if _shoelace2(r) > 0]
        if len(shells) != 1:
            out[g] = None
            continue
        group_rings.insert(0, group_rings.pop(shells[0]))
    return out


def _split_groups(rings: PixelRings, ring_group: np.ndarray, n_groups: int) -> list[PixelRings]:
    """One :class:`PixelRings` per group (rings of a group need not be consecutive)."""
    parts = []
    for g in range(n_groups):
        sel = np.flatnonzero(ring_group == g)
        parts.append(concat_rings([PixelRings(rings.x[rings.off[r]:rings.off[r + 1]],
                                              rings.y[rings.off[r]:rings.off[r + 1]],
                                              np.array([0, rings.off[r + 1] - rings.off[r]]),
                                              rings.exterior[r:r + 1]) for r in sel]))
    return parts


def _without_collinear(ring: np.ndarray) -> np.ndarray:
    """An open ring of integer vertices without the vertices on a straight line between their
    neighbours (where seams were, and the seam breakpoints of densify_seams)."""
    n = len(ring)
    keep = np.empty(n, dtype=bool)
    for a in range(0, n, _BATCH):  # in batches: int64 temporaries of a scene-sized ring add up
        b = min(a + _BATCH, n)
        pts = ring[np.arange(a - 1, b + 1) % n].astype(np.int64)  # with the previous and next vertex
        d = np.diff(pts, axis=0)  # d[i]: the segment from vertex a-1+i to a+i
        keep[a:b] = d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0] != 0
    return ring[keep]


def _shoelace2(ring: np.ndarray) -> int:
    """Twice the signed area of an open ring of integer vertices (exact; > 0: counter-clockwise)."""
    x, y = ring[:, 0].astype(np.int64), ring[:, 1].astype(np.int64)
    return int(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


# --------------------------------------------------------------------------------------------
# finishing a polygon given as rings: GEOS' normal form, measures and WKB, all in numpy
# --------------------------------------------------------------------------------------------


def _batches(rings: list[np.ndarray], limit: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Runs of consecutive rings of about ``limit`` vertices together (a bigger ring alone), as
    (index of the first ring, their vertices concatenated as int64, ring offsets into them)."""
    start, total = 0, 0
    for i in range(len(rings) + 1):
        if i == len(rings) or (total and total + len(rings[i]) > limit):
            batch = rings[start:i]
            off = np.concatenate([[0], np.cumsum([len(r) for r in batch])])
            yield start, np.concatenate(batch).astype(np.int64), off
            start, total = i, 0
        if i < len(rings):
            total += len(rings[i])


def _next_in_ring(off: np.ndarray) -> np.ndarray:
    """Index of the next vertex of the same ring, for open rings concatenated at offsets ``off``."""
    nxt = np.arange(1, off[-1] + 1)
    nxt[off[1:] - 1] = off[:-1]
    return nxt


def normalized(rings: list[np.ndarray]) -> list[np.ndarray]:
    """Shell and holes (open integer rings, shell first) in the order GEOS' ``normalize`` writes a
    Polygon: every ring starts at its smallest vertex (x, then y), the shell clockwise and the
    holes counter-clockwise, the holes sorted in descending order (by vertex count, then by
    vertices), so the WKB equals ``shapely.normalize`` of the same polygon.  Vectorised over
    batches of rings (a scene-spanning polygon has tens of thousands of holes)."""
    out: list[np.ndarray] = []
    keys = []  # per ring: vertex count, first and second vertex (the hole order)
    for first, xy, off in _batches(rings, _BATCH):
        lens = np.diff(off)
        x, y = xy[:, 0], xy[:, 1]
        order_key = x * (int(y.max()) + 1) + y  # (x, then y) as one number; vertices of a ring are distinct
        at_min = order_key == np.repeat(np.minimum.reduceat(order_key, off[:-1]), lens)
        smallest = np.flatnonzero(at_min) - off[:-1]  # per ring: where its smallest vertex is
        nxt = _next_in_ring(off)
        ccw = np.add.reduceat(x * y[nxt] - x[nxt] * y, off[:-1]) > 0
        clockwise = np.zeros(lens.size, dtype=bool)
        if first == 0:
            clockwise[0] = True  # the shell
        back = np.repeat(ccw == clockwise, lens)  # these rings run the wrong way: walk them backwards
        j = np.arange(off[-1]) - np.repeat(off[:-1], lens)
        k, n = np.repeat(smallest, lens), np.repeat(lens, lens)
        src = np.repeat(off[:-1], lens) + np.where(back, (k - j) % n, (k + j) % n)
        ring_xy = xy[src].astype(np.int32)
        keys.append(np.column_stack([lens, ring_xy[off[:-1]], ring_xy[off[:-1] + 1]]))
        out += np.split(ring_xy, off[1:-1])
    shell, holes = out[0], out[1:]
    if len(holes) > 1:
        # distinct holes of a valid polygon never share their first two vertices, so these keys decide
        k = np.concatenate(keys)[1:]
        order = np.lexsort(k.T[::-1])[::-1]
        holes = [holes[i] for i in order]
    return [shell, *holes]


def measure(rings: list[np.ndarray], transform) -> tuple[float, float]:
    """(area, perimeter) in the units of the affine ``transform`` (a, b, c, d, e, f) of a polygon
    given as open integer rings, shell first; the area is exact in pixels, then scaled."""
    a, b, _, d, e, _ = transform
    shell2 = holes2 = 0  # twice the areas in pixels, exact (int64 sums)
    length = 0.0
    for first, xy, off in _batches(rings, _BATCH):
        x, y = xy[:, 0], xy[:, 1]
        nxt = _next_in_ring(off)
        twice = np.abs(np.add.reduceat(x * y[nxt] - x[nxt] * y, off[:-1]))
        if first == 0:  # the shell is the very first ring
            shell2, twice = int(twice[0]), twice[1:]
        holes2 += int(twice.sum())
        dx, dy = (x[nxt] - x).astype(np.float64), (y[nxt] - y).astype(np.float64)
        length += float(np.hypot(dx * a + dy * b, dx * d + dy * e).sum())
    return (shell2 - holes2) / 2 * abs(a * e - b * d), length


def multipolygon_wkb(rings: list[np.ndarray], transform) -> bytearray:
    """Little-endian WKB of the MultiPolygon with one polygon of these open integer rings (shell
    first), each vertex mapped through the affine ``transform`` with GDAL's evaluation order
    (``c + x * a + y * b``), as ``shapely.to_wkb`` would write it.  Written into one buffer."""
    a, b, c, d, e, f = transform
    size = 1 + 4 + 4 + 1 + 4 + 4 + sum(4 + 16 * (len(r) + 1) for r in rings)
    out = bytearray(size)
    struct.pack_into("<BIIBII", out, 0, 1, 6, 1, 1, 3, len(rings))
    view = memoryview(out)
    pos = 18
    for _, xy, off in _batches(rings, _BATCH):
        closed = np.insert(np.arange(off[-1]), off[1:], off[:-1])  # each ring, then its first vertex again
        x, y = xy[closed, 0].astype(np.float64), xy[closed, 1].astype(np.float64)
        coords = np.empty((closed.size, 2), dtype="<f8")
        coords[:, 0] = c + x * a + y * b
        coords[:, 1] = f + x * d + y * e
        del x, y, closed
        raw = coords.data.cast("B")
        for start, end in zip(off[:-1] + np.arange(off.size - 1), off[1:] + np.arange(1, off.size)):
            n = int(end - start)
            struct.pack_into("<I", out, pos, n)
            view[pos + 4:pos + 4 + 16 * n] = raw[16 * start:16 * end]
            pos += 4 + 16 * n
    return out


#: Vertices per batch of rings in the finishing functions (bounds their temporaries; a bigger
#: ring is a batch of its own: about 100 bytes per vertex of it, briefly).
_BATCH = 1 << 18
