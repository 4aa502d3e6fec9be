"""Graph algorithms behind seamless block-wise vectorization; pure numpy, no I/O, no dask.

Everything here works on integer pixel grids and integer ids, so results are exact:

* :func:`label_components` - connected components (4 or 8) of equal class values inside one
  block, numbered in raster-scan order of their first pixel.
* :func:`union_components` - connected components of an id graph given as edge lists (a
  vectorised union-find: hook to the smaller root, then pointer jumping).
* :func:`seam_pairs` - the pixel pairs that straddle the seams between blocks, as
  ``(piece, piece, same_value, key)`` records.
* :func:`scan_block` / :func:`plan_sieve` / :func:`apply_sieve` - a block-wise sieve that gives
  exactly the result of GDAL's ``GDALSieveFilter`` (``rasterio.features.sieve``) run on the whole
  raster.  GDAL's rule, restated: every component smaller than the threshold takes the value of
  the component reached by following "largest neighbour" links (ties: the neighbour met first in
  GDAL's pixel scan) until one at least as large as the threshold is reached; components whose
  chain ends in a cycle or has no neighbour keep their value.  Component sizes, neighbour choices
  and chains are global, so the sieve is computed in two passes: a scan of every block (local
  components, their adjacency with GDAL's scan keys, the labels on block edges), one small global
  plan (union across seams, the neighbour choice, pointer-doubling over the chains), and an
  application pass per block.

Scan keys: GDAL compares each pixel with its upper neighbour, then (8-connectivity) upper-left and
upper-right, then its left neighbour.  The key of a comparison made at pixel ``(row, col)`` in
direction ``d`` is ``(row * width + col) * 4 + d`` (``d``: up 0, up-left 1, up-right 2, left 3), so
"met first" is "smallest key".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.io.grid import BlockGrid  # the one block layout (also imported from here)

UP, UP_LEFT, UP_RIGHT, LEFT = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------
# union-find
# --------------------------------------------------------------------------------------------


def union_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root of each of ``n`` nodes after joining every edge ``(a[i], b[i])``.

    The root of a component is its smallest node id.  Vectorised: each round hooks every edge's
    larger root onto the smaller one, then compresses all paths by pointer jumping.
    """
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while a.size:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        pa, pb = pa[differ], pb[differ]
        a, b = a[differ], b[differ]
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))
        while True:
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp
    return parent


# --------------------------------------------------------------------------------------------
# connected components of one block
# --------------------------------------------------------------------------------------------


@dataclass
class Labels:
    """Components of one block: ``labels`` (-1 = nodata), and per label its value, size and first pixel."""

    labels: np.ndarray  # (h, w) int32
    values: np.ndarray  # (n,) int64
    sizes: np.ndarray  # (n,) int64
    first: np.ndarray  # (n,) int64: flat index (row * w + col) of the first pixel in scan order
    #: the same labels as horizontal runs (flat start index, label; -1 = nodata), when known
    run_pos: np.ndarray | None = None
    run_label: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(self.values.size)


def label_components(values: np.ndarray, valid: np.ndarray, connectivity: int = 4) -> Labels:
    """Connected components of equal ``values`` among ``valid`` pixels, numbered in scan order.

    Works on horizontal runs: a run starts wherever the value or validity changes along a row;
    runs on consecutive rows are joined where they touch (4: share a column; 8: also diagonally)
    with equal values.
    """
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    values = np.asarray(values)
    valid = np.asarray(valid, dtype=bool)
    h, w = values.shape
    if h == 0 or w == 0:
        return Labels(np.full((h, w), -1, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                      np.zeros(0, np.int64))
    start = np.ones((h, w), dtype=bool)
    start[:, 1:] = (values[:, 1:] != values[:, :-1]) | (valid[:, 1:] != valid[:, :-1])
    flat_start = start.ravel()
    run_of = np.cumsum(flat_start, dtype=np.int32).reshape(h, w)
    run_of -= 1
    run_pos = np.flatnonzero(flat_start)  # flat index of each run's first pixel
    n_runs = run_pos.size
    run_valid = valid.ravel()[run_pos]

    ea, eb = [], []
    if h > 1:
        same = valid[1:] & valid[:-1] & (values[1:] == values[:-1])
        # one record per touching run pair: where a run starts on either row or the contact begins
        fresh = same.copy()
        fresh[:, 1:] &= start[1:, 1:] | start[:-1, 1:] | ~same[:, :-1]
        ea.append(run_of[:-1][fresh])
        eb.append(run_of[1:][fresh])
        del same, fresh
        if connectivity == 8 and w > 1:
            d1 = valid[:-1, :-1] & valid[1:, 1:] & (values[:-1, :-1] == values[1:, 1:])
            ea.append(run_of[:-1, :-1][d1])
            eb.append(run_of[1:, 1:][d1])
            d2 = valid[:-1, 1:] & valid[1:, :-1] & (values[:-1, 1:] == values[1:, :-1])
            ea.append(run_of[:-1, 1:][d2])
            eb.append(run_of[1:, :-1][d2])
    del start, flat_start, run_of  # the labels are rebuilt from the runs (one (h, w) int32 array at a time)
    if ea:
        a, b = np.concatenate(ea).astype(np.int64), np.concatenate(eb).astype(np.int64)
        if connectivity == 8 and a.size:
            pair = np.unique(a * n_runs + b)
            a, b = pair // n_runs, pair % n_runs
        root = union_components(n_runs, a, b)
    else:
        root = np.arange(n_runs, dtype=np.int64)
    # compact ids over valid runs; roots are the smallest run of each component = scan order
    comp = np.full(n_runs, -1, dtype=np.int64)
    is_root = (root == np.arange(n_runs)) & run_valid
    roots = np.flatnonzero(is_root)
    new_id = np.full(n_runs, -1, dtype=np.int64)
    new_id[roots] = np.arange(roots.size)
    comp[run_valid] = new_id[root[run_valid]]
    run_len = np.diff(np.append(run_pos, h * w))
    sizes = np.bincount(comp[run_valid], weights=run_len[run_valid], minlength=roots.size).astype(np.int64)
    run_label = comp.astype(np.int32)
    labels = np.repeat(run_label, run_len).reshape(h, w)
    return Labels(labels, values.ravel()[run_pos[roots]].astype(np.int64), sizes, run_pos[roots].astype(np.int64),
                  run_pos, run_label)


def labels_from_runs(shape: tuple[int, int], values: np.ndarray, sizes: np.ndarray, first: np.ndarray,
                     run_pos: np.ndarray, run_label: np.ndarray) -> Labels:
    """Rebuild :class:`Labels` from their run encoding (much cheaper than labelling again)."""
    h, w = shape
    run_len = np.diff(np.append(run_pos, h * w))
    labels = np.repeat(run_label, run_len).reshape(h, w)
    return Labels(labels, values, sizes, first, run_pos, run_label)


def block_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top row, bottom row, left column, right column) of a label block, as copies."""
    return (labels[0].copy(), labels[-1].copy(), labels[:, 0].copy(), labels[:, -1].copy())


# --------------------------------------------------------------------------------------------
# seams between blocks
# --------------------------------------------------------------------------------------------


@dataclass
class SeamPairs:
    """Pixel pairs across seams: global piece ids ``a``, ``b``, whether their values are equal, scan key."""

    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    key: np.ndarray


def _edge_ids(lab: np.ndarray, gid: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(global piece id, value) along one block edge of local labels ``lab`` (-1: nodata, value 0)."""
    if gid.size == 0:  # an all-nodata block
        return np.full(lab.shape, -1, np.int64), np.zeros(lab.shape, np.int64)
    safe = np.maximum(lab, 0)
    return np.where(lab >= 0, gid[safe], -1), np.where(lab >= 0, values[safe], 0)


def _seam_lines(grid: BlockGrid, edges: list, gid: list, values: list):
    """Every seam line with the (global piece id, value) of the pixels on either side of it.

    Yields ``(axis, coord, (ids_a, values_a), (ids_b, values_b))``: axis 0 is the vertical line
    ``x = coord`` (the first column of a block column), ``a`` its left and ``b`` its right side, one
    entry per raster row; axis 1 is the horizontal line ``y = coord``, ``a`` above and ``b`` below,
    one entry per raster column.  Ids are -1 (value 0) on nodata.
    """
    def side(blocks, which: int) -> tuple[np.ndarray, np.ndarray]:
        parts = [_edge_ids(edges[i][which], gid[i], values[i]) for i in blocks]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    n_cols, bs = grid.n_cols, grid.block_size
    for c in range(1, n_cols):
        rows = range(grid.n_rows)
        yield 0, c * bs, side([r * n_cols + c - 1 for r in rows], 3), side([r * n_cols + c for r in rows], 2)
    for r in range(1, grid.n_rows):
        cols = range(n_cols)
        yield 1, r * bs, side([(r - 1) * n_cols + c for c in cols], 1), side([r * n_cols + c for c in cols], 0)


def seam_breakpoints(grid: BlockGrid, edges: list, gid: list,
                     values: list) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Where pieces start or end along each seam line, from either side.

    Returns ``({X: ys}, {Y: xs})``: for the vertical seam line ``x = X`` the sorted pixel-corner
    ``y`` coordinates where the piece on its left or on its right changes (and likewise for
    horizontal lines ``y = Y``).  Pieces from both sides get a vertex at each of them (see
    ``geoseg.vector.geometry.densify_seams``), which makes them an edge-matched coverage with far fewer
    vertices than one per pixel.
    """
    lines: tuple[dict[int, np.ndarray], dict[int, np.ndarray]] = ({}, {})
    for axis, coord, (a, _), (b, _) in _seam_lines(grid, edges, gid, values):
        lines[axis][coord] = np.flatnonzero((a[1:] != a[:-1]) | (b[1:] != b[:-1])) + 1
    return lines


def seam_pairs(grid: BlockGrid, edges: list, gid: list, values: list, connectivity: int) -> SeamPairs:
    """All pixel pairs that straddle a seam between two blocks.

    ``edges[i]`` is block i's (top, bottom, left, right) local labels (-1 = nodata); ``gid[i]``
    maps its local labels to global piece ids; ``values[i]`` its local label values.  Only
    pairs of valid pixels are returned.  ``key`` is GDAL's scan key of the comparison
    (see the module docstring).
    """
    W = grid.width
    out_a, out_b, out_s, out_k = [], [], [], []

    def emit(ga, va, gb, vb, key):
        ok = (ga >= 0) & (gb >= 0)
        out_a.append(ga[ok])
        out_b.append(gb[ok])
        out_s.append(va[ok] == vb[ok])
        out_k.append(key[ok])

    for axis, coord, (ga, va), (gb, vb) in _seam_lines(grid, edges, gid, values):
        if axis == 0:  # vertical seam: column X = coord is the first column of a block column
            X, (lg, lv), (rg, rv) = coord, (ga, va), (gb, vb)
            y = np.arange(grid.height, dtype=np.int64)
            emit(rg, rv, lg, lv, (y * W + X) * 4 + LEFT)  # pixel (y, X) compared with its left neighbour
            if connectivity == 8:
                emit(rg[1:], rv[1:], lg[:-1], lv[:-1], (y[1:] * W + X) * 4 + UP_LEFT)
                emit(lg[1:], lv[1:], rg[:-1], rv[:-1], (y[1:] * W + X - 1) * 4 + UP_RIGHT)
        else:  # horizontal seam: row Y = coord is the first row of a block row
            Y, (tg, tv), (bg, bv) = coord, (ga, va), (gb, vb)
            x = np.arange(W, dtype=np.int64)
            emit(bg, bv, tg, tv, (Y * W + x) * 4 + UP)
            if connectivity == 8:
                emit(bg[1:], bv[1:], tg[:-1], tv[:-1], (Y * W + x[1:]) * 4 + UP_LEFT)
                emit(bg[:-1], bv[:-1], tg[1:], tv[1:], (Y * W + x[:-1]) * 4 + UP_RIGHT)
    if not out_a:
        z = np.zeros(0, np.int64)
        return SeamPairs(z, z, np.zeros(0, bool), z)
    return SeamPairs(np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s), np.concatenate(out_k))


# --------------------------------------------------------------------------------------------
# exact block-wise sieve
# --------------------------------------------------------------------------------------------


@dataclass
class SieveScan:
    """What the sieve plan needs from one block (all ids local to the block)."""

    values: np.ndarray  # value per local piece
    sizes: np.ndarray  # pixel count per local piece (inside this block)
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    adj_a: np.ndarray  # local piece that is small inside the block
    adj_b: np.ndarray  # a neighbouring local piece
    adj_key: np.ndarray  # smallest scan key of a comparison between the two
    #: the block's components as runs (first pixel per piece, run starts, run labels), so the
    #: apply pass rebuilds them instead of labelling the block again; None: label again
    first: np.ndarray | None = None
    run_pos: np.ndarray | None = None
    run_label: np.ndarray | None = None

    def labels(self, shape: tuple[int, int]) -> Labels | None:
        if self.run_pos is None or self.run_label is None or self.first is None:
            return None
        return labels_from_runs(shape, self.values, self.sizes, self.first, self.run_pos, self.run_label)


def _pairs_in_block(lab: Labels, values: np.ndarray, valid: np.ndarray, row_off: int, col_off: int,
                    width: int, connectivity: int, keep: np.ndarray):
    """Neighbouring pixel pairs of different components inside a block, with their scan keys.

    Returns (a, b, key) in both orientations, restricted to ``keep[a]``, reduced to the smallest
    key per (a, b).
    """
    L = lab.labels
    h, w = L.shape
    aa, bb, kk = [], [], []

    def emit(pa, pb, va, vb, ma, mb, dr, dc, d):
        # (pa, pb): labels of the pixel making the comparison and of its neighbour, as views of
        # the block shifted so that index (i, j) is pixel (i + dr, j + dc)
        ok = ma & mb & (va != vb)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return
        la, lb = pa[ok], pb[ok]
        either = keep[la] | keep[lb]  # only pairs with a small piece on one side are needed
        idx, la, lb = idx[either], la[either], lb[either]
        ncol = ok.shape[1]
        key = ((idx // ncol + (dr + row_off)) * width + (idx % ncol + (dc + col_off))) * 4 + d
        for x, y in ((la, lb), (lb, la)):
            sel = keep[x]
            aa.append(x[sel])
            bb.append(y[sel])
            kk.append(key[sel])

    if h > 1:  # pixel (y, x) vs (y-1, x)
        emit(L[1:], L[:-1], values[1:], values[:-1], valid[1:], valid[:-1], 1, 0, UP)
    if w > 1:  # pixel (y, x) vs (y, x-1)
        emit(L[:, 1:], L[:, :-1], values[:, 1:], values[:, :-1], valid[:, 1:], valid[:, :-1], 0, 1, LEFT)
    if connectivity == 8 and h > 1 and w > 1:
        emit(L[1:, 1:], L[:-1, :-1], values[1:, 1:], values[:-1, :-1], valid[1:, 1:], valid[:-1, :-1], 1, 1, UP_LEFT)
        emit(L[1:, :-1], L[:-1, 1:], values[1:, :-1], values[:-1, 1:], valid[1:, :-1], valid[:-1, 1:], 1, 0, UP_RIGHT)
    if not aa:
        z = np.zeros(0, np.int64)
        return z, z, z
    a = np.concatenate(aa).astype(np.int64)
    b = np.concatenate(bb).astype(np.int64)
    k = np.concatenate(kk)
    return min_key_per_pair(a, b, k, max(lab.count, 1))


def min_key_per_pair(a: np.ndarray, b: np.ndarray, key: np.ndarray, n: int):
    """Reduce (a, b, key) records to one per (a, b) pair, with the smallest key."""
    if a.size == 0:
        return a, b, key
    order = np.lexsort((key, b, a))
    a, b, key = a[order], b[order], key[order]
    first = np.ones(a.size, dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], key[first]


def scan_block(values: np.ndarray, valid: np.ndarray, row_off: int, col_off: int, width: int,
               threshold: int, connectivity: int) -> SieveScan:
    """Pass 1 of the sieve on one block."""
    lab = label_components(values, valid, connectivity)
    small = lab.sizes < threshold
    a, b, k = _pairs_in_block(lab, values, valid, row_off, col_off, width, connectivity, small)
    run_pos = lab.run_pos.astype(np.int32) if lab.run_pos is not None and values.size < 2**31 else lab.run_pos
    return SieveScan(lab.values, lab.sizes, block_edges(lab.labels), a, b, k, lab.first, run_pos, lab.run_label)


@dataclass
class SievePlan:
    """Per block: local piece ids whose pixels take a new value, and that value."""

    pieces: list[np.ndarray]
    new_values: list[np.ndarray]
    changed_components: int
    small_components: int


def plan_sieve(grid: BlockGrid, scans: list[SieveScan], threshold: int, connectivity: int) -> SievePlan:
    """Pass 2 of the sieve: global components, largest neighbours and chains -> new values."""
    counts = np.array([s.values.size for s in scans], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(counts)])
    n = int(base[-1])
    gvals = np.concatenate([s.values for s in scans]) if n else np.zeros(0, np.int64)
    gsizes = np.concatenate([s.sizes for s in scans]) if n else np.zeros(0, np.int64)
    gid = [base[i] + np.arange(counts[i], dtype=np.int64) for i in range(len(scans))]
    seams = seam_pairs(grid, [s.edges for s in scans], gid, [s.values for s in scans], connectivity)
    root = union_components(n, seams.a[seams.same], seams.b[seams.same])
    roots, comp = np.unique(root, return_inverse=True)
    n_comp = roots.size
    csize = np.bincount(comp, weights=gsizes, minlength=n_comp).astype(np.int64)
    cval = np.zeros(n_comp, dtype=np.int64)
    cval[comp] = gvals
    small = csize < threshold

    # candidate neighbour records (component, neighbour component, key), for small components
    ra = [base[i] + s.adj_a for i, s in enumerate(scans)]
    rb = [base[i] + s.adj_b for i, s in enumerate(scans)]
    rk = [s.adj_key for s in scans]
    diff = ~seams.same
    ra += [seams.a[diff], seams.b[diff]]
    rb += [seams.b[diff], seams.a[diff]]
    rk += [seams.key[diff], seams.key[diff]]
    ca = comp[np.concatenate(ra)] if n else np.zeros(0, np.int64)
    cb = comp[np.concatenate(rb)] if n else np.zeros(0, np.int64)
    ck = np.concatenate(rk) if n else np.zeros(0, np.int64)
    sel = small[ca] & (ca != cb)
    ca, cb, ck = ca[sel], cb[sel], ck[sel]
    # largest neighbour; ties: smallest scan key (met first)
    order = np.lexsort((ck, -csize[cb], ca))
    ca, cb = ca[order], cb[order]
    first = np.ones(ca.size, dtype=bool)
    first[1:] = ca[1:] != ca[:-1]
    FAIL = n_comp
    nxt = np.arange(n_comp + 1, dtype=np.int64)
    nxt[np.flatnonzero(small)] = FAIL  # small without neighbour: left alone
    nxt[ca[first]] = cb[first]
    # follow the chains: big components are fixed points, cycles never reach one
    for _ in range(int(np.ceil(np.log2(n_comp + 2))) + 1):
        nxt = nxt[nxt]
    target = nxt[:n_comp]
    ok = small & (target != FAIL)
    ok[ok] = ~small[target[ok]]
    new_val = np.where(ok, cval[np.minimum(target, n_comp - 1)], 0) if n_comp else np.zeros(0, np.int64)
    pieces, new_values = [], []
    for i in range(len(scans)):
        c = comp[base[i]:base[i + 1]]
        change = np.flatnonzero(ok[c])
        pieces.append(change.astype(np.int64))
        new_values.append(new_val[c[change]])
    return SievePlan(pieces, new_values, int(ok.sum()), int(small.sum()))


def apply_sieve(values: np.ndarray, valid: np.ndarray, connectivity: int, pieces: np.ndarray,
                new_values: np.ndarray, adj_a: np.ndarray | None = None,
                adj_b: np.ndarray | None = None, labels: Labels | None = None) -> tuple[np.ndarray, Labels]:
    """Pass 3 of the sieve on one block: relabel (same numbering as the scan) and remap values.

    Returns the sieved block and its components.  With the scan's neighbour pairs (``adj_a``,
    ``adj_b``), the components after the sieve are derived from those before it (a remapped
    patch joins the neighbours that now have its value; every such pair was recorded because a
    remapped patch is small) instead of labelling the block a second time.  The numbering is the
    same as :func:`label_components` of the result: scan order of the first pixel.
    """
    lab = labels if labels is not None else label_components(values, valid, connectivity)
    if pieces.size == 0:
        return values, lab
    lut = lab.values.copy()
    lut[pieces] = new_values
    # one gather over the block: label -1 (nodata) reads the extra last slot, then nodata pixels
    # get their original value back
    out = np.append(lut, 0).astype(values.dtype)[lab.labels]
    np.copyto(out, values, where=~valid)
    if adj_a is None or adj_b is None:
        return out, label_components(out, valid, connectivity)
    join = lut[adj_a] == lut[adj_b]
    root = union_components(lab.count, adj_a[join], adj_b[join])
    roots, comp = np.unique(root, return_inverse=True)  # roots: smallest old label = first in scan order
    new_labels = np.append(comp, -1).astype(np.int32)[lab.labels]  # label -1 stays -1
    sizes = np.bincount(comp, weights=lab.sizes, minlength=roots.size).astype(np.int64)
    return out, Labels(new_labels, lut[roots], sizes, lab.first[roots])


def sieve_blocks(values: np.ndarray, valid: np.ndarray, threshold: int, connectivity: int,
                 block_size: int) -> np.ndarray:
    """In-memory reference of the three sieve passes over a block grid (for tests and tools)."""
    h, w = values.shape
    grid = BlockGrid(h, w, block_size)
    scans = []
    for win in grid.windows():
        r, c, bh, bw = win.row_off, win.col_off, win.height, win.width
        scans.append(scan_block(values[r:r + bh, c:c + bw], valid[r:r + bh, c:c + bw], r, c, w, threshold,
                                connectivity))
    plan = plan_sieve(grid, scans, threshold, connectivity)
    out = values.copy()
    for i, win in enumerate(grid.windows()):
        r, c, bh, bw = win.row_off, win.col_off, win.height, win.width
        out[r:r + bh, c:c + bw] = apply_sieve(values[r:r + bh, c:c + bw], valid[r:r + bh, c:c + bw],
                                              connectivity, plan.pieces[i], plan.new_values[i],
                                              scans[i].adj_a, scans[i].adj_b, scans[i].labels((bh, bw)))[0]
    return out
