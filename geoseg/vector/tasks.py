"""The block tasks of ``vectorize_raster``: read, sieve (scan, plan), polygonize one block; and the spec they share.

Plain functions over a picklable :class:`VectorizeSpec` (paths and numbers; no open handles, no
dask): :func:`sieve_scan_task`, :func:`sieve_plan_task`, :func:`polygonize_task` run as dask tasks
(:mod:`geoseg.vector.api` builds the graph), :func:`~geoseg.vector.merge.merge_task` in a thread after
them.  Tasks stage their arrays and geometries as ``.npz`` files (no pickle, :mod:`geoseg.vector.staging`)
in the run's staging folder and return paths, counts and edge labels.  The area model is in
:mod:`geoseg.vector.area`, the pixel-geometry helpers in :mod:`geoseg.vector.geometry`; their names, the
merge's and the staging helpers' stay importable from here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import RasterioIOError

from geoseg.errors import InputError
from geoseg.io.grid import BlockGrid
from geoseg.io.raster import configure_gdal_cache, read_band
from geoseg.vector.area import AreaModel
from geoseg.vector.components import (
    Labels,
    SieveScan,
    apply_sieve,
    block_edges,
    label_components,
    plan_sieve,
    scan_block,
)
from geoseg.vector.geometry import (
    add_holes,
    canonical,
    densify_seams,
    drop_collinear,
    north_up,
    pixel_to_crs,
    shapes_to_polygons,
    strip_inner_holes,
    to_multipolygons,
)
from geoseg.vector.staging import packed, save_npz, stage_polygons, trim_heap, unpacked

__all__ = [
    "VectorizeSpec", "BlockResult", "read_block", "sieve_scan_task", "sieve_plan_task", "polygonize_task",
    "finish_polygons",
    # moved, importable from here as before
    "AreaModel", "add_holes", "canonical", "densify_seams", "drop_collinear", "north_up", "pixel_to_crs",
    "shapes_to_polygons", "strip_inner_holes", "to_multipolygons", "trim_heap", "unpacked",
]


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
    save_npz(path, **arrays, **{f"edge_{k}": e for k, e in enumerate(scan.edges)})
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
        save_npz(_staging_path(spec, "sieve", i), pieces=pieces, new_values=new_values)
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


def finish_polygons(spec: VectorizeSpec, geoms_px: np.ndarray,
                    collinear: bool | np.ndarray = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-coordinate pieces -> MultiPolygons in the raster CRS, with area and perimeter in metres.

    ``collinear``: whether (all, or each of) the pieces may have collinear vertices to drop;
    False for pieces straight from GDAL or rebuilt from relinked rings (:mod:`geoseg.vector.pixel_union`).
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


def _block_labels(spec: VectorizeSpec, index: int, values: np.ndarray,
                  valid: np.ndarray) -> tuple[np.ndarray, Labels]:
    """The block's (sieved, if planned) values and their connected components."""
    if spec.sieve_pixels <= 1:
        return values, label_components(values, valid, spec.connectivity)
    scan = _load_scan(_staging_path(spec, "scan", index), runs=True)
    with np.load(_staging_path(spec, "sieve", index), allow_pickle=False) as z:
        pieces, new_values = z["pieces"], z["new_values"]
    return apply_sieve(values, valid, spec.connectivity, pieces, new_values, scan.adj_a, scan.adj_b,
                       scan.labels(values.shape))


def _polygonize(spec: VectorizeSpec, lab: Labels, valid: np.ndarray, need: np.ndarray, r0: int,
                c0: int) -> np.ndarray:
    """GDAL's polygons (pixel coordinates) of the labels in ``need``, by label (None for the others);
    coverage-simplified as a whole block with ``spec.simplify_px``."""
    geoms = np.empty(lab.count, dtype=object)
    if not need.any():
        return geoms
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
    return geoms


def polygonize_task(spec: VectorizeSpec, index: int, sieved: object = None) -> BlockResult:
    """Sieve (if planned: ``sieved`` is the plan task's result), label, polygonize one block; stage
    its final polygons and its open pieces."""
    win = spec.grid.window(index)
    r0, c0, h, w = win.row_off, win.col_off, win.height, win.width
    values, valid = read_block(spec, index)
    values, lab = _block_labels(spec, index, values, valid)
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
    geoms = _polygonize(spec, lab, valid, need, r0, c0)

    final = selected & ~open_mask
    staged = None
    if final.any():
        collinear = bool(spec.simplify_px) or spec.connectivity == 8
        g, area, perimeter = finish_polygons(spec, geoms[final], collinear=collinear)
        staged = _staging_path(spec, "block", index)
        stage_polygons(staged, ids[final], lab.values[final], g, area, perimeter)
    opened = np.flatnonzero(selected & open_mask)
    open_staged = None
    if opened.size:
        pieces, holes, owner = strip_inner_holes(geoms[opened], (c0, r0, c0 + w, r0 + h))
        open_staged = _staging_path(spec, "open", index)
        save_npz(open_staged, id=ids[opened], **packed("piece", pieces), **packed("hole", shapely.polygons(holes)),
                 hole_owner=owner)
    # edges by open piece: unselected and final pieces, like nodata, never join across a seam
    to_open = np.full(n + 1, -1, dtype=np.int32)  # label -1 reads the last slot
    to_open[opened] = np.arange(opened.size, dtype=np.int32)
    result = BlockResult(
        index=index,
        values=lab.values[opened],
        edges=tuple(to_open[e] for e in edges),
        valid_pixels=int(lab.sizes.sum()),
        final_features=int(final.sum()),
        present_values=np.unique(lab.values),
        staged=staged,
        open_staged=open_staged,
    )
    del lab, geoms, values, valid  # freed before the heap is trimmed
    trim_heap()  # a worker process keeps its heap between tasks, and may write the output next
    return result
