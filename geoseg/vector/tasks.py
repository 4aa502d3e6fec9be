"""The work of ``vectorize_raster`` below the graph: block tasks, the seam merge, their helpers.

Plain functions over a picklable :class:`VectorizeSpec` (paths and numbers; no open handles, no
dask): :func:`sieve_scan_task`, :func:`sieve_plan_task`, :func:`polygonize_task` run as dask tasks
(:mod:`geoseg.vectorize` builds the graph), :func:`merge_task` in a thread after them.  Tasks
stage their arrays and geometries as ``.npz`` files (no pickle) in the run's staging folder and
return paths, counts and edge labels.  Also here: the area model, the pixel-geometry helpers
(canonical form, seam densification, the affine transform) and heap trimming.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from geoseg.errors import InputError
from geoseg.io.grid import BlockGrid
from geoseg.io.raster import configure_gdal_cache, read_band
from geoseg.vector.components import (
    SieveScan,
    apply_sieve,
    block_edges,
    label_components,
    plan_sieve,
    scan_block,
    seam_breakpoints,
    seam_pairs,
    union_components,
)
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

# --------------------------------------------------------------------------------------------
# measuring in metres
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AreaModel:
    """How to measure geometries given in the raster CRS: scale (projected) or a local LAEA."""

    kind: str  # "projected" or "laea"
    factor: float  # metres per CRS unit (projected)
    crs_wkt: str
    laea: str | None = None

    @property
    def description(self) -> str:
        if self.kind == "projected":
            return "raster CRS (projected)"
        return f"local equal-area CRS {self.laea}"

    def _to_laea(self, geoms: np.ndarray) -> np.ndarray:
        from pyproj import Transformer

        tr = Transformer.from_crs(CRS.from_wkt(self.crs_wkt), self.laea, always_xy=True)

        def fn(xy: np.ndarray) -> np.ndarray:
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        return shapely.transform(geoms, fn)

    def measure(self, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(area m², perimeter m) of geometries in the raster CRS."""
        if len(geoms) == 0:
            return np.zeros(0), np.zeros(0)
        if self.kind == "projected":
            return shapely.area(geoms) * self.factor**2, shapely.length(geoms) * self.factor
        g = self._to_laea(geoms)
        return shapely.area(g), shapely.length(g)


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------


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

    ``xs``/``ys``: :func:`~geoseg.vector_graph.seam_breakpoints` (the pixel corners along each
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


# --------------------------------------------------------------------------------------------
# tasks (plain functions over a picklable spec; no dask)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorizeSpec:
    path: str
    band: int
    height: int
    width: int
    block_size: int
    transform: tuple[float, float, float, float, float, float]
    masked: bool  # read the band's mask
    connectivity: int
    sieve_pixels: int  # 0: no sieve
    simplify_px: float | None
    selected: tuple[int, ...] | None
    area: AreaModel
    staging: str

    @property
    def grid(self) -> BlockGrid:
        return BlockGrid(self.height, self.width, self.block_size)


def read_block(spec: VectorizeSpec, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) of block ``index``."""
    configure_gdal_cache()
    win = spec.grid.window(index)
    r, c, h, w = win.row_off, win.col_off, win.height, win.width
    try:
        with rasterio.open(spec.path) as src:
            return read_band(src, spec.band, win, spec.masked)
    except RasterioIOError as e:
        cause = str(e.__cause__ or e).strip().splitlines()[0]
    # raised outside the except block: GDAL's exception classes, as its context, would not survive the
    # trip back from a worker process
    raise InputError(
        f"cannot read rows {r}-{r + h - 1}, columns {c}-{c + w - 1} of {spec.path} ({cause}); the file may be "
        "truncated or corrupt: check it with gdalinfo -checksum, or recreate it"
    )


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    """Plain arrays (no pickle: ``np.load(allow_pickle=False)`` reads them back), written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def _packed(prefix: str, geoms: np.ndarray) -> dict[str, np.ndarray]:
    """Geometries (or their WKB, bytes-like) as one WKB byte array and the length of each."""
    wkb = geoms if len(geoms) and not isinstance(geoms[0], shapely.Geometry) else shapely.to_wkb(geoms)
    lengths = np.fromiter((len(b) for b in wkb), dtype=np.int64, count=len(wkb))
    # one geometry: a view of its WKB (np.savez writes it in chunks), so a huge polygon is not copied
    blob = np.frombuffer(wkb[0] if len(wkb) == 1 else b"".join(wkb), dtype=np.uint8)
    return {f"{prefix}_blob": blob, f"{prefix}_len": lengths}


def unpacked(z, prefix: str) -> np.ndarray:
    """The WKB of each geometry (object array of bytes) from :func:`_packed` arrays."""
    blob, lengths = z[f"{prefix}_blob"], z[f"{prefix}_len"]
    ends = np.cumsum(lengths)
    out = np.empty(lengths.size, dtype=object)
    out[:] = [blob[a:b].tobytes() for a, b in zip(ends - lengths, ends)]  # no copy of the whole blob
    return out


def _staging_path(spec: VectorizeSpec, kind: str, index: int) -> str:
    return os.path.join(spec.staging, f"{kind}-{index:07d}.npz")


def sieve_scan_task(spec: VectorizeSpec, index: int) -> str:
    """Pass 1 of the sieve on one block, staged to disk; returns the file.

    Nothing of it travels through dask: the scans of all blocks are as many numbers as the
    raster has patches, and dask would keep them in the main process until the last polygonize
    task had run (and send them to every worker again)."""
    values, valid = read_block(spec, index)
    win = spec.grid.window(index)
    scan = scan_block(values, valid, win.row_off, win.col_off, spec.width, spec.sieve_pixels, spec.connectivity)
    path = _staging_path(spec, "scan", index)
    arrays = {f.name: getattr(scan, f.name) for f in dataclasses.fields(scan) if f.name != "edges"}
    _save_npz(path, **arrays, **{f"edge_{k}": e for k, e in enumerate(scan.edges)})
    return path


def _load_scan(path: str, runs: bool) -> SieveScan:
    """A staged scan; ``runs``: with the block's patches as runs (only the polygonize task needs them)."""
    with np.load(path, allow_pickle=False) as z:
        skip = () if runs else ("first", "run_pos", "run_label")
        fields = {f.name: None if f.name in skip else z[f.name] for f in dataclasses.fields(SieveScan)
                  if f.name != "edges"}
        return SieveScan(edges=tuple(z[f"edge_{k}"] for k in range(4)), **fields)  # type: ignore[arg-type]


def sieve_plan_task(spec: VectorizeSpec, *scans: str) -> tuple[int, int]:
    """Pass 2 of the sieve over every block's staged scan; each block's part of the plan is staged
    beside it.  Returns (patches that change value, small patches)."""
    plan = plan_sieve(spec.grid, [_load_scan(p, runs=False) for p in scans], spec.sieve_pixels, spec.connectivity)
    for i, (pieces, new_values) in enumerate(zip(plan.pieces, plan.new_values)):
        _save_npz(_staging_path(spec, "sieve", i), pieces=pieces, new_values=new_values)
    return plan.changed_components, plan.small_components


@dataclass
class BlockResult:
    """What the merge needs from one block, plus counts for the summary.

    The block's open pieces (selected pieces touching an inner block edge) are staged in
    ``open_staged``; ``values`` and ``edges`` are indexed by their position there.
    """

    index: int
    values: np.ndarray  # class value per open piece
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # open piece (-1: none) along each edge
    valid_pixels: int
    final_features: int
    present_values: np.ndarray  # class values present in the block (after sieve)
    staged: str | None  # the block's final polygons
    open_staged: str | None  # its open pieces (pixel coordinates), their ids and inner holes

    @property
    def n_open(self) -> int:
        return int(self.values.size)


def _stage(path: str, ids: np.ndarray, values: np.ndarray, geoms: np.ndarray, area: np.ndarray,
           perimeter: np.ndarray) -> None:
    order = np.argsort(ids, kind="stable")
    _save_npz(path, id=ids[order], value=values[order], **_packed("wkb", geoms[order]), area_m2=area[order],
              perimeter_m=perimeter[order])


def _finish(spec: VectorizeSpec, geoms_px: np.ndarray,
            collinear: bool | np.ndarray = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-coordinate pieces -> MultiPolygons in the raster CRS, with area and perimeter in metres.

    ``collinear``: whether (all, or each of) the pieces may have collinear vertices to drop;
    False for pieces straight from GDAL or rebuilt from relinked rings (:mod:`geoseg.pixel_union`).
    """
    mask = np.broadcast_to(np.asarray(collinear, dtype=bool), (len(geoms_px),))
    g = np.empty(len(geoms_px), dtype=object)
    g[mask] = canonical(geoms_px[mask])
    g[~mask] = shapely.normalize(to_multipolygons(geoms_px[~mask]))
    g = pixel_to_crs(g, spec.transform)
    if spec.simplify_px or not north_up(spec.transform):
        # Diagonal edges (simplified) or a rotated grid: where a polygon's parts (or a hole and its
        # shell) touch at a point that lies inside an edge, not at a vertex, the transformed point
        # can land a rounding error across that edge (seen on a real label in degrees). Repair such
        # polygons by uniting their own parts: the point set, and the coverage, stay.
        bad = ~shapely.is_valid(g)
        if bad.any():
            g[bad] = shapely.normalize(to_multipolygons(shapely.make_valid(g[bad], method="structure")))
    area, perimeter = spec.area.measure(g)
    return g, area, perimeter


def north_up(transform: Sequence[float]) -> bool:
    """No rotation or shear: pixel rows and columns map to constant y and x (exactly, in floats)."""
    return transform[1] == 0 and transform[3] == 0


def polygonize_task(spec: VectorizeSpec, index: int, sieved: object = None) -> BlockResult:
    """Sieve (if planned: ``sieved`` is the plan task's result), label, polygonize one block; stage
    its final polygons and its open pieces."""
    win = spec.grid.window(index)
    r0, c0, h, w = win.row_off, win.col_off, win.height, win.width
    values, valid = read_block(spec, index)
    if spec.sieve_pixels > 1:
        scan = _load_scan(_staging_path(spec, "scan", index), runs=True)
        with np.load(_staging_path(spec, "sieve", index), allow_pickle=False) as z:
            pieces, new_values = z["pieces"], z["new_values"]
        values, lab = apply_sieve(values, valid, spec.connectivity, pieces, new_values, scan.adj_a, scan.adj_b,
                                  scan.labels(values.shape))
        del scan, pieces, new_values
    else:
        lab = label_components(values, valid, spec.connectivity)
    n = lab.count
    edges = block_edges(lab.labels)
    open_mask = np.zeros(n, dtype=bool)
    inner_sides = (r0 > 0, r0 + h < spec.height, c0 > 0, c0 + w < spec.width)
    for edge, inner in zip(edges, inner_sides):
        if inner:
            open_mask[edge[edge >= 0]] = True
    selected = np.ones(n, dtype=bool) if spec.selected is None else np.isin(lab.values, spec.selected)
    need = np.ones(n, dtype=bool) if spec.simplify_px else selected
    first_row = lab.first // w + r0
    first_col = lab.first % w + c0
    ids = first_row * spec.width + first_col

    geoms = np.empty(n, dtype=object)
    if need.any():
        if need.all():  # every valid pixel (label -1 is exactly nodata)
            mask = valid
        else:
            lut = np.append(need, False)  # label -1 (nodata) -> index n -> False
            mask = lut[lab.labels]
        items = rasterio.features.shapes(lab.labels, mask=mask, connectivity=spec.connectivity,
                                         transform=Affine.translation(c0, r0))
        polys, labels = shapes_to_polygons(items)
        if spec.connectivity == 8:  # 8-connected pixel sets can pinch at a vertex
            bad = ~shapely.is_valid(polys)
            if bad.any():
                polys[bad] = shapely.make_valid(polys[bad])
        if spec.simplify_px:
            # Coverage simplification of the whole block: shared edges are simplified once, the
            # block border (and nodata) stays put so pieces still meet their neighbours across seams.
            # a vertex at every pixel corner along each edge; GEOS interpolates them (14.999999999999998
            # for 15), and both sides of a seam must get the same numbers: round them back to integers
            polys = shapely.transform(shapely.segmentize(polys, 1.0), np.rint)
            polys = shapely.coverage_simplify(polys, spec.simplify_px, simplify_boundary=False)
        geoms[labels] = polys
        del polys, items

    final = selected & ~open_mask
    staged = None
    if final.any():
        g, area, perimeter = _finish(spec, geoms[final], collinear=bool(spec.simplify_px) or spec.connectivity == 8)
        staged = _staging_path(spec, "block", index)
        _stage(staged, ids[final], lab.values[final], g, area, perimeter)
    opened = np.flatnonzero(selected & open_mask)
    open_staged = None
    if opened.size:
        pieces, holes, owner = strip_inner_holes(geoms[opened], (c0, r0, c0 + w, r0 + h))
        open_staged = _staging_path(spec, "open", index)
        _save_npz(open_staged, id=ids[opened], **_packed("piece", pieces), **_packed("hole", shapely.polygons(holes)),
                  hole_owner=owner)
    # edges by open piece: unselected and final pieces, like nodata, never join across a seam
    to_open = np.full(n + 1, -1, dtype=np.int32)  # label -1 reads the last slot
    to_open[opened] = np.arange(opened.size, dtype=np.int32)
    result = BlockResult(
        index=index,
        values=lab.values[opened],
        edges=tuple(to_open[e] for e in edges),  # type: ignore[arg-type]
        valid_pixels=int(lab.sizes.sum()),
        final_features=int(final.sum()),
        present_values=np.unique(lab.values),
        staged=staged,
        open_staged=open_staged,
    )
    lab = geoms = values = valid = mask = None  # noqa: F841 - freed before the heap is trimmed
    trim_heap()  # a worker process keeps its heap between tasks, and may write the output next
    return result


@dataclass
class MergeResult:
    groups: int
    pieces: int
    staged: list[str]
    #: the most open pieces held at once while merging (the merge's memory, in pieces)
    peak_pieces: int = 0
    relinked: int = 0  # groups unioned by geoseg.pixel_union
    geos_unions: int = 0  # groups unioned by GEOS (8-connectivity, simplified pieces, or a fallback)


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
    blocks = sorted(blocks, key=lambda b: b.index)
    counts = np.array([b.n_open for b in blocks], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(counts)])
    n = int(base[-1])
    if n == 0:
        return MergeResult(0, 0, [])
    gid = [base[i] + np.arange(counts[i], dtype=np.int64) for i in range(len(blocks))]
    edges, values = [b.edges for b in blocks], [b.values for b in blocks]
    seams = seam_pairs(spec.grid, edges, gid, values, spec.connectivity)
    root = union_components(n, seams.a[seams.same], seams.b[seams.same])
    del seams
    xs, ys = seam_breakpoints(spec.grid, edges, gid, values)
    _, group = np.unique(root, return_inverse=True)
    n_groups = int(group.max()) + 1
    last = np.zeros(n_groups, dtype=np.int64)  # position of the last block with a piece of each group
    np.maximum.at(last, group, np.repeat(np.arange(len(blocks)), counts))
    stager = _MergeStager(spec)
    held: dict[int, list] = {}  # group -> [(id, value, piece, holes)]
    peak = n_held = relinked = geos_unions = 0
    relinkable = spec.connectivity == 4 and not spec.simplify_px
    for pos, blk in enumerate(blocks):
        if not counts[pos] or blk.open_staged is None:
            continue
        win = spec.grid.window(blk.index)
        r0, c0, h, w = win.row_off, win.col_off, win.height, win.width
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
        n_pieces = pieces.size
        # held compactly (8 bytes per vertex) where the rings can be relinked; GEOS otherwise
        compact = piece_rings(pieces) if relinkable else None
        if compact is not None:
            pieces = compact
            holes = _open_integer_rings(holes)
        here = group[base[pos]:base[pos + 1]]
        for k, g in enumerate(here.tolist()):
            held.setdefault(g, []).append((int(ids[k]), int(blk.values[k]), pieces[k],
                                           holes[hole_bounds[k]:hole_bounds[k + 1]]))
        n_held += n_pieces
        peak = max(peak, n_held)
        del pieces, holes, compact
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
    :class:`~geoseg.pixel_union.PixelRings` are relinked in one call (the lists are emptied)."""
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

    ``rings``: the group's union already relinked (:func:`~geoseg.pixel_union.relink_groups`, for
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
        # (whose transformed polygons _finish checks): finish with GEOS
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
            self.flush()  # a huge polygon is staged alone: its WKB goes to disk without a copy (_packed)
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
            g, area, perimeter = _finish(self.spec, geoms, ~clean)
            del geoms
            for k, w, a, p in zip(todo, shapely.to_wkb(g), area, perimeter):
                items[k].wkb, items[k].area, items[k].perimeter = w, float(a), float(p)
            del g
        path = os.path.join(self.spec.staging, f"merged-{len(self.staged):05d}.npz")
        wkb = np.empty(len(items), dtype=object)
        wkb[:] = [j.wkb for j in items]
        _stage(path, np.array([j.id for j in items], dtype=np.int64), np.array([j.value for j in items], dtype=np.int64),
               wkb, np.array([j.area for j in items]), np.array([j.perimeter for j in items]))
        self.staged.append(path)
        del items, wkb
        trim_heap()


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    The merge thread and the writer allocate and free large geometry buffers in turn, from two
    malloc arenas; without trimming, the freed pages stay in the process (about 100 MiB of the
    peak on a 10k² raster).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None
