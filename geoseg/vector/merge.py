"""The seam merge of ``vectorize_raster``: the blocks' open pieces joined across seams into final polygons.

:func:`merge_task` runs in a thread after the block tasks (see :mod:`geoseg.vector.api`).  A union-find over
the pixel pairs on the seams gives each output polygon's group of pieces and the last block holding one; the
blocks' staged pieces are then read in block order and each group is joined as soon as its last block has been
read: by relinking rings (:mod:`geoseg.vector.pixel_union`) for 4-connected, unsimplified pieces, else by GEOS'
coverage union (the pieces are densified along the seams into an edge-matched coverage first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from geoseg.vector.components import seam_breakpoints, seam_pairs, union_components
from geoseg.vector.geometry import add_holes, densify_seams, north_up
from geoseg.vector.pixel_union import (
    PixelRings,
    concat_rings,
    measure,
    multipolygon_wkb,
    normalized,
    open_rings,
    piece_rings,
    polygon_of_rings,
    relink_groups,
    rings_geometry,
)
from geoseg.vector.staging import stage_polygons, trim_heap, unpacked
from geoseg.vector.tasks import BlockResult, VectorizeSpec, finish_polygons


@dataclass
class MergeResult:
    groups: int
    pieces: int
    staged: list[str]
    #: the most open pieces held at once while merging (the merge's memory, in pieces)
    peak_pieces: int = 0
    relinked: int = 0  # groups unioned by geoseg.vector.pixel_union
    geos_unions: int = 0  # groups unioned by GEOS (8-connectivity, simplified pieces, or a fallback)

    def counts(self) -> dict[str, int]:
        """The merge's counts as ``VectorizeResult.extra`` reports them."""
        return {"merged_polygons": self.groups, "seam_pieces": self.pieces, "merge_peak_pieces": self.peak_pieces,
                "relinked_unions": self.relinked, "geos_unions": self.geos_unions}


#: Vertices of merged polygons finished and staged at once (bounds the merge's extra memory).
MERGE_BATCH_VERTICES = 2_000_000
#: Merged polygons with at least this many vertices are finished in numpy, straight to WKB
#: (the same bytes as GEOS' way, with a fraction of its memory); smaller ones in GEOS batches.
NUMPY_FINISH_VERTICES = 100_000


def merge_task(spec: VectorizeSpec, *blocks: BlockResult) -> MergeResult:
    """Join the open pieces of all blocks across seams into final polygons and stage them.

    Streams: the union-find over the pixel pairs on the seams needs only the blocks' edges, so
    the groups (one per output polygon) and the last block of each are known first.  Then the
    blocks are visited in index order, each one's staged pieces loaded, and a group is unioned
    and staged as soon as its last block has been visited.  Only the pieces of groups still open
    at the current block are in memory (about one row of blocks, plus any polygon that spans
    more), not all the pieces on every seam.
    """
    ordered = sorted(blocks, key=lambda b: b.index)
    counts = np.array([b.n_open for b in ordered], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(counts)])
    n = int(base[-1])
    if n == 0:
        return MergeResult(0, 0, [])
    gid = [base[i] + np.arange(counts[i], dtype=np.int64) for i in range(len(ordered))]
    edges, values = [b.edges for b in ordered], [b.values for b in ordered]
    seams = seam_pairs(spec.grid, edges, gid, values, spec.connectivity)
    root = union_components(n, seams.a[seams.same], seams.b[seams.same])
    del seams
    xs, ys = seam_breakpoints(spec.grid, edges, gid, values)
    _, group = np.unique(root, return_inverse=True)
    n_groups = int(group.max()) + 1
    last = np.zeros(n_groups, dtype=np.int64)  # position of the last block with a piece of each group
    np.maximum.at(last, group, np.repeat(np.arange(len(ordered)), counts))
    stager = _MergeStager(spec)
    held: dict[int, list] = {}  # group -> [(id, value, piece, holes)]
    peak = n_held = relinked = geos_unions = 0
    relinkable = spec.connectivity == 4 and not spec.simplify_px
    for pos, blk in enumerate(ordered):
        if not counts[pos] or blk.open_staged is None:
            continue
        here = group[base[pos]:base[pos + 1]]
        pieces = _open_pieces(spec, blk, xs, ys, relinkable)
        for g, piece in zip(here.tolist(), pieces):
            held.setdefault(g, []).append(piece)
        n_held += len(pieces)
        peak = max(peak, n_held)
        del pieces
        groups = [held.pop(g) for g in np.unique(here[last[here] == pos]).tolist()]
        n_held -= sum(len(parts) for parts in groups)
        done = _join_all(spec, groups)  # empties the lists
        relinked += sum(j.relinked for j in done)
        geos_unions += sum(j.geos for j in done)
        done.sort(key=lambda j: j.id, reverse=True)  # id order within a block (popped from the end)
        while done:
            stager.add(done.pop())
        trim_heap()
    stager.flush()
    return MergeResult(n_groups, n, stager.staged, peak, relinked, geos_unions)


def _open_pieces(spec: VectorizeSpec, blk: BlockResult, xs: dict[int, np.ndarray], ys: dict[int, np.ndarray],
                 relinkable: bool) -> list[tuple[int, int, Any, Any]]:
    """A block's staged open pieces as ``[(id, value, piece, inner holes)]``, densified along the seams
    around the block (``xs``/``ys``: :func:`~geoseg.vector.components.seam_breakpoints`); ``relinkable``: held
    compactly as :class:`~geoseg.vector.pixel_union.PixelRings` (8 bytes per vertex) where possible."""
    win = spec.grid.window(blk.index)
    r0, c0, h, w = win.row_off, win.col_off, win.height, win.width
    assert blk.open_staged is not None
    with np.load(blk.open_staged, allow_pickle=False) as z:
        ids, owner = z["id"], z["hole_owner"]
        pieces = shapely.from_wkb(unpacked(z, "piece"))
        holes = shapely.get_exterior_ring(shapely.from_wkb(unpacked(z, "hole")))
    # a block's pieces lie on the seam lines around it only
    pieces = densify_seams(pieces, {x: xs[x] for x in (c0, c0 + w) if x in xs},
                           {y: ys[y] for y in (r0, r0 + h) if y in ys})
    hole_order = np.argsort(owner, kind="stable")
    holes = holes[hole_order]
    hole_bounds = np.searchsorted(owner[hole_order], np.arange(pieces.size + 1))
    # held compactly (8 bytes per vertex) where the rings can be relinked; GEOS otherwise
    compact = piece_rings(pieces) if relinkable else None
    if compact is not None:
        pieces = compact
        holes = _open_integer_rings(holes)
    return [(int(ids[k]), int(blk.values[k]), pieces[k], holes[hole_bounds[k]:hole_bounds[k + 1]])
            for k in range(len(ids))]


@dataclass
class _Joined:
    """One merged polygon: finished (WKB in the raster CRS, area, perimeter) or a pixel-coordinate
    geometry still to finish (``clean``: without collinear vertices)."""

    id: int
    value: int
    geom: Any = None
    clean: bool = False
    wkb: bytes | bytearray | None = None
    area: float = 0.0
    perimeter: float = 0.0
    relinked: bool = False
    geos: bool = False

    @property
    def vertices(self) -> int:
        return len(self.wkb) // 16 if self.wkb is not None else int(shapely.get_num_coordinates(self.geom))


def _open_integer_rings(rings: np.ndarray) -> list[np.ndarray]:
    """LinearRings with integer vertices -> open (n, 2) int32 arrays."""
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    if xy.size == 0:
        return []
    return [r[:-1].astype(np.int32) for r in np.split(xy, np.flatnonzero(np.diff(ring)) + 1)]


def _join_all(spec: VectorizeSpec, groups: list[list]) -> list[_Joined]:
    """:func:`_join` of the groups a block completes; the ones held as
    :class:`~geoseg.vector.pixel_union.PixelRings` are relinked in one call (the lists are emptied)."""
    todo = [i for i, parts in enumerate(groups) if len(parts) > 1 and all(isinstance(p[2], PixelRings) for p in parts)]
    relinked: dict[int, list | None] = {}
    if todo:
        pieces = [p[2] for i in todo for p in groups[i]]
        ring_group = np.concatenate([np.full(p[2].n_rings, k) for k, i in enumerate(todo) for p in groups[i]])
        relinked = dict(zip(todo, relink_groups(concat_rings(pieces), ring_group, len(todo))))
        del pieces
    return [_join(spec, parts, relinked.get(i)) for i, parts in enumerate(groups)]


def _join(spec: VectorizeSpec, parts: list, rings: list | None = None) -> _Joined:
    """Union of one group's pieces ``[(id, value, piece, inner holes)]`` (the list is emptied).

    ``rings``: the group's union already relinked (:func:`~geoseg.vector.pixel_union.relink_groups`, for
    4-connected, unsimplified pieces held as PixelRings); large results in a projected CRS are then
    finished in numpy straight to WKB, so a polygon as large as the scene costs a few arrays of its
    vertices rather than several GEOS copies.  Otherwise, or if the relinking declined, GEOS'
    coverage union does it.
    """
    joined = _Joined(min(p[0] for p in parts), parts[0][1], relinked=rings is not None)
    pieces = [p[2] for p in parts]
    holes = [h for p in parts for h in p[3]]
    parts.clear()
    if rings is None and len(pieces) == 1 and isinstance(pieces[0], PixelRings):
        rings = open_rings(pieces[0])
    if rings is None:
        # the pieces form an edge-matched coverage (densify_seams): a linear-time union suffices
        geoms = np.array([rings_geometry(p) if isinstance(p, PixelRings) else p for p in pieces], dtype=object)
        del pieces
        if holes and not isinstance(holes[0], shapely.Geometry):
            holes = [shapely.LinearRing(h) for h in holes]
        geom = geoms[0] if geoms.size == 1 else shapely.coverage_union_all(geoms)
        joined.geom, joined.geos = add_holes(geom, np.array(holes, dtype=object)), geoms.size > 1
        return joined
    del pieces
    rings += holes
    del holes
    if (spec.area.kind != "projected" or not north_up(spec.transform)
            or sum(len(r) for r in rings) < NUMPY_FINISH_VERTICES):
        # small (batched GEOS is faster), areas need the local equal-area CRS, or a rotated grid
        # (whose transformed polygons finish_polygons checks): finish with GEOS
        joined.geom, joined.clean = polygon_of_rings(rings), True
        return joined
    rings = normalized(rings)
    area, perimeter = measure(rings, spec.transform)
    joined.area, joined.perimeter = area * spec.area.factor ** 2, perimeter * spec.area.factor
    joined.wkb = multipolygon_wkb(rings, spec.transform)
    return joined


class _MergeStager:
    """Finishes merged polygons and stages them in batches of about MERGE_BATCH_VERTICES vertices."""

    def __init__(self, spec: VectorizeSpec) -> None:
        self.spec = spec
        self.staged: list[str] = []
        self._items: list[_Joined] = []
        self._vertices = 0

    def add(self, item: _Joined) -> None:
        if item.vertices >= MERGE_BATCH_VERTICES:
            self.flush()  # a huge polygon is staged alone: its WKB goes to disk without a copy (staging.packed)
        self._items.append(item)
        self._vertices += item.vertices
        if self._vertices >= MERGE_BATCH_VERTICES:
            self.flush()

    def flush(self) -> None:
        items, self._items, self._vertices = self._items, [], 0
        if not items:
            return
        todo = [k for k, j in enumerate(items) if j.wkb is None]
        if todo:  # pixel-coordinate geometries: finish them (canonical form, CRS, measures) with GEOS
            geoms = np.array([items[k].geom for k in todo], dtype=object)
            clean = np.array([items[k].clean for k in todo])
            for k in todo:
                items[k].geom = None
            g, area, perimeter = finish_polygons(self.spec, geoms, ~clean)
            del geoms
            for k, w, a, p in zip(todo, shapely.to_wkb(g), area, perimeter):
                items[k].wkb, items[k].area, items[k].perimeter = w, float(a), float(p)
            del g
        path = os.path.join(self.spec.staging, f"merged-{len(self.staged):05d}.npz")
        wkb = np.empty(len(items), dtype=object)
        wkb[:] = [j.wkb for j in items]
        stage_polygons(path, np.array([j.id for j in items], dtype=np.int64),
                       np.array([j.value for j in items], dtype=np.int64), wkb, np.array([j.area for j in items]),
                       np.array([j.perimeter for j in items]))
        self.staged.append(path)
        del items, wkb
        trim_heap()

