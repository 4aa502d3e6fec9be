"""Union of pixel polygons that meet along shared edges, by relinking their rings; numpy, no GEOS overlay.

The seam merge of :mod:`geoseg.vectorize` joins the pieces of one 4-connected region that GDAL
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

GEOS' ``coverage_union_all`` does the same job through a planar graph with a few hundred bytes per
vertex; on the polygon that spans a whole scene (millions of vertices) that graph, not the
polygon, set the peak memory of the merge.  Here the work arrays are a few numbers per vertex.

:func:`union_pixel_polygons` returns None instead of guessing whenever the input is not what it
expects (non-integer vertices, a part that is not a polygon, a segment shared the wrong way, more
than one shell, a ring through the same vertex twice); the caller then falls back to GEOS.
"""

from __future__ import annotations

import numpy as np
import shapely

__all__ = ["union_pixel_polygons"]


def _ring_arrays(pieces: np.ndarray):
    """(integer x, y of each ring vertex without the closing one, ring index of each, ring offsets,
    whether each ring is its polygon's exterior), read straight from the coordinates (no ring copies)."""
    parts = shapely.get_parts(pieces)
    if parts.size == 0 or (shapely.get_type_id(parts) != 3).any():
        return None
    _, xy, (ring_off, poly_off) = shapely.to_ragged_array(parts)
    if xy.size and (xy.min() < 0 or xy.max() >= 2**31 - 1 or not np.array_equal(xy, np.round(xy))):
        return None
    n_rings = ring_off.size - 1
    keep = np.ones(xy.shape[0], dtype=bool)
    keep[ring_off[1:] - 1] = False  # the closing vertex repeats the first
    x = xy[keep, 0].astype(np.int32)
    y = xy[keep, 1].astype(np.int32)
    del xy
    off = ring_off - np.arange(n_rings + 1)
    if (np.diff(off) < 3).any():
        return None
    ring_of = np.repeat(np.arange(n_rings, dtype=np.int32), np.diff(off))
    exterior = np.zeros(n_rings, dtype=bool)
    exterior[poly_off[:-1]] = True
    return x, y, ring_of, off, exterior


def _signed_areas(x: np.ndarray, y: np.ndarray, nxt: np.ndarray, ring_of: np.ndarray, n_rings: int) -> np.ndarray:
    """Twice the signed area of each ring (shoelace; positive = counter-clockwise in x/y)."""
    x, y = x.astype(np.float64), y.astype(np.float64)  # exact: integers below 2**31, products below 2**62
    return np.bincount(ring_of, weights=x * y[nxt] - x[nxt] * y, minlength=n_rings)


def union_pixel_polygons(pieces: np.ndarray, holes: np.ndarray | None = None) -> shapely.Polygon | None:
    """The union of ``pieces`` (pixel polygons of one 4-connected region, edge-matched) as one Polygon.

    ``holes``: more interior rings for the result (rings strictly inside it), added as they are.
    None when the input is outside what this handles; see the module docstring.
    """
    arrays = _ring_arrays(np.asarray(pieces, dtype=object))
    if arrays is None:
        return None
    x, y, ring_of, off, exterior = arrays
    n_rings = off.size - 1
    n = x.size
    idx = np.arange(n)
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
        order = np.empty(n, dtype=np.int64)
        order[new_pos] = idx
        x, y = x[order], y[order]

    # vertex keys, and the vertices that more than one ring passes
    stride = int(x.max()) + 2
    key = y.astype(np.int64) * stride + x
    sorted_keys = np.sort(key)
    repeated = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]]
    del sorted_keys
    junction = np.isin(key, repeated)
    del repeated, idx

    # 2. segments shared by two pieces (both ends are junctions): cancel both directions
    s_key, e_key = key, key[nxt]
    cand = np.flatnonzero(junction & junction[nxt])
    cancelled = np.zeros(n, dtype=bool)
    if cand.size:
        lo, hi = np.minimum(s_key[cand], e_key[cand]), np.maximum(s_key[cand], e_key[cand])
        order = np.lexsort((hi, lo))
        lo, hi, c = lo[order], hi[order], cand[order]
        same = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1])
        if (same[1:] & same[:-1]).any():  # a segment in three rings: not a coverage
            return None
        pair = np.flatnonzero(same)
        a, b = c[pair], c[pair + 1]
        if (s_key[a] == s_key[b]).any():  # two pieces overlap along a segment (same direction)
            return None
        cancelled[a] = cancelled[b] = True

    # 3. chains: from a junction vertex along kept segments to the next junction vertex
    start = np.flatnonzero(junction & ~cancelled)  # positions where a chain begins (segment kept)
    intact = np.ones(n_rings, dtype=bool)
    intact[ring_of[junction]] = False
    if start.size == 0 and intact.sum() != 1:
        return None
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
        return None
    single = count == 1
    succ[single] = by_start[lo_i[single]]
    for c in np.flatnonzero(~single).tolist():
        cands = by_start[lo_i[c]:hi_i[c]]
        dx, dy = d_in[c]
        ox, oy = d_out[cands, 0], d_out[cands, 1]
        turn = np.arctan2(dx * oy - dy * ox, dx * ox + dy * oy)  # > 0 left, < 0 right
        succ[c] = cands[np.argmin(turn)]
    if np.unique(succ).size != n_ch:  # not a one-to-one linking
        return None

    # 4. walk the cycles and assemble the rings
    rings_xy: list[np.ndarray] = []
    seen = np.zeros(n_ch, dtype=bool)
    for c0 in range(n_ch):
        if seen[c0]:
            continue
        pieces_xy = []
        visited = []
        c = c0
        while not seen[c]:
            seen[c] = True
            visited.append(start_key[c])
            s, e = start[c], end[c]
            if e > s:
                seg = np.arange(s, e)
            else:  # wraps around the ring's end
                r = ring_of[s]
                seg = np.concatenate([np.arange(s, off[r + 1]), np.arange(off[r], e)])
            pieces_xy.append(np.column_stack([x[seg], y[seg]]))
            c = succ[c]
        if c != c0 or len(set(visited)) != len(visited):  # not a simple closed ring
            return None
        rings_xy.append(_closed_without_collinear(np.concatenate(pieces_xy)))
    for r in np.flatnonzero(intact).tolist():
        rings_xy.append(_closed_without_collinear(np.column_stack([x[off[r]:off[r + 1]], y[off[r]:off[r + 1]]])))
    areas = np.array([_shoelace(r) for r in rings_xy])
    shells = np.flatnonzero(areas > 0)
    if shells.size != 1:
        return None
    shell = rings_xy.pop(int(shells[0]))
    inner = shapely.linearrings(np.concatenate(rings_xy), indices=np.repeat(np.arange(len(rings_xy)),
                                                                            [len(r) for r in rings_xy])) \
        if rings_xy else np.empty(0, dtype=object)
    del rings_xy
    if holes is not None and len(holes):
        inner = np.concatenate([inner, np.asarray(holes, dtype=object)])
    return shapely.polygons(shell, holes=inner if len(inner) else None)


def _closed_without_collinear(ring: np.ndarray) -> np.ndarray:
    """An open ring of integer vertices -> closed float ring without vertices on a straight line
    between their neighbours (where seams were, and the seam breakpoints of densify_seams)."""
    d_out = np.roll(ring, -1, axis=0) - ring  # segment leaving each vertex
    d_in = np.roll(d_out, 1, axis=0)  # segment arriving at it
    turn = d_in[:, 0].astype(np.int64) * d_out[:, 1] - d_in[:, 1].astype(np.int64) * d_out[:, 0]
    ring = ring[turn != 0].astype(np.float64)
    return np.vstack([ring, ring[:1]])


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:-1, 0], ring[:-1, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
