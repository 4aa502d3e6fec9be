"""Alert patches of a state read block by block (:class:`PatchCollector`): the 4-connected patches of alert
pixels that share a first-loss date, exactly as a pass over the whole AOI finds them.

Per block (:meth:`PatchCollector.add`): the block's components (:func:`geoseg.vector.components.label_components`
on the first-loss dates of the alert pixels).  A component that touches no inner block edge is final: GDAL
polygonizes it in the block (pixel coordinates of the AOI grid, integer vertices, so the polygon is the one a
whole-AOI polygonize gives) and its counts come from the labels.  The others (open pieces) keep their pixels
(row, col, first loss, confidence, last loss) and the labels on the block's edges.  At the end
(:meth:`PatchCollector.finish`) a union-find over the pixel pairs across each seam (same date = same patch;
:func:`geoseg.vector.components.union_components`) groups the pieces, and each group is rasterized in its
bounding box and polygonized once.

Memory: one block of the state, the final patches' polygons, and the pixels of the open pieces (those on
seams): what grows with the AOI is the number of alerts and the largest patch (built whole: it is one feature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geoseg.io.grid import BlockGrid, Window
from geoseg.io.warp import Grid
from geoseg.monitoring import state as ms
from geoseg.monitoring.alerts import Patch, patch_alerts, top_left
from geoseg.vector.components import label_components, union_components

__all__ = ["PatchCollector", "derive_alerts"]


def _polygons(mask: np.ndarray, row_off: int, col_off: int) -> list:
    """4-connected polygons of ``mask`` in pixel coordinates of the AOI grid (the block's offset added)."""
    from affine import Affine
    from rasterio.features import shapes
    from shapely.geometry import shape

    t = Affine.translation(col_off, row_off)
    return [shape(g) for g, _ in shapes(mask.astype(np.uint8), mask=mask, connectivity=4, transform=t)]


def _active(state: ms.PixelState) -> np.ndarray:
    return np.isin(state.confidence, (ms.LOW, ms.HIGH, ms.REJECTED)) & (state.first_loss != ms.NONE)


@dataclass
class _Edges:
    """The global piece ids (-1: none) and first-loss dates along a block's four edges."""

    ids: dict[str, np.ndarray]
    values: dict[str, np.ndarray]


def _edge_lines(a: np.ndarray) -> dict[str, np.ndarray]:
    """Copies (not views: a view would keep the whole block alive) of the block's four edge lines."""
    return {"top": a[0].copy(), "bottom": a[-1].copy(), "left": a[:, 0].copy(), "right": a[:, -1].copy()}


@dataclass
class PatchCollector:
    """Collects the alert patches of a state given block by block (blocks of ``blocks``, each once)."""

    blocks: BlockGrid
    patches: list[Patch] = field(default_factory=list)
    _edges: dict[int, _Edges] = field(default_factory=dict)
    _open: list[np.ndarray] = field(default_factory=list)  # (6, n) int64: id, row, col, first, conf, last
    _n_ids: int = 0

    def add(self, index: int, state: ms.PixelState) -> None:
        """The block ``index`` of the state (``state`` holds that block's pixels)."""
        w = self.blocks.window(index)
        active = _active(state)
        lab = label_components(state.first_loss, active, 4)
        labels = lab.labels
        inner = {"top": w.row_off > 0, "bottom": w.row_end < self.blocks.height, "left": w.col_off > 0,
                 "right": w.col_end < self.blocks.width}
        is_open = np.zeros(lab.count + 1, bool)  # index label + 1 (0: no label)
        for side, line in _edge_lines(labels).items():
            if inner[side]:
                is_open[line + 1] = True
        is_open[0] = False
        ids = np.where(labels >= 0, labels.astype(np.int64) + self._n_ids, -1)
        self._edges[index] = _Edges(_edge_lines(ids), _edge_lines(state.first_loss))
        opened = is_open[labels + 1]
        if opened.any():
            r, c = np.nonzero(opened)
            self._open.append(np.stack([ids[r, c], r + w.row_off, c + w.col_off, state.first_loss[r, c],
                                        state.confidence[r, c], state.last_loss[r, c]]).astype(np.int64))
        self._n_ids += lab.count
        self._add_final(state, labels, active & ~opened, w)

    def _add_final(self, state: ms.PixelState, labels: np.ndarray, final: np.ndarray, w: Window) -> None:
        """The patches of ``final`` pixels (whole components inside the block)."""
        if not final.any():
            return
        lab = np.where(final, labels, -1).ravel() + 1
        n = int(lab.max()) + 1
        cnt = np.bincount(lab, minlength=n)
        n_high = np.bincount(lab, weights=(state.confidence == ms.HIGH).ravel(), minlength=n).astype(int)
        n_low = np.bincount(lab, weights=(state.confidence == ms.LOW).ravel(), minlength=n).astype(int)
        last = np.full(n, -1, np.int64)
        np.maximum.at(last, lab, state.last_loss.ravel().astype(np.int64))
        first = state.first_loss
        for d in np.unique(first[final]):
            for poly in _polygons(final & (first == d), w.row_off, w.col_off):
                r, c = top_left(poly)
                k = int(labels[r - w.row_off, c - w.col_off]) + 1
                self.patches.append(Patch(poly, int(d), int(cnt[k]), int(n_high[k]), int(n_low[k]), int(last[k])))

    def _seam_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Piece ids joined across the seams (4-connected neighbours with the same first-loss date)."""
        a, b = [], []
        g = self.blocks
        for index, e in self._edges.items():
            r, c = divmod(index, g.n_cols)
            for side, other, their in (("bottom", (r + 1) * g.n_cols + c, "top"),
                                       ("right", index + 1, "left")):
                if (side == "bottom" and r + 1 >= g.n_rows) or (side == "right" and c + 1 >= g.n_cols):
                    continue
                o = self._edges[other]
                x, y = e.ids[side], o.ids[their]
                same = (x >= 0) & (y >= 0) & (e.values[side] == o.values[their])
                a.append(x[same])
                b.append(y[same])
        if not a:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(a), np.concatenate(b)

    def finish(self) -> list[Patch]:
        """Every patch: the final ones, then the pieces joined across seams (one patch per group)."""
        if len(self._edges) != len(self.blocks):
            raise ValueError(f"{len(self._edges)} of {len(self.blocks)} blocks given")
        if self._open:
            pix = np.concatenate(self._open, axis=1)
            root = union_components(self._n_ids, *self._seam_pairs())[pix[0]]
            order = np.argsort(root, kind="stable")
            pix, root = pix[:, order], root[order]
            bounds = np.flatnonzero(np.diff(root)) + 1
            for g in np.split(pix, bounds, axis=1):
                self.patches.append(_group_patch(g))
            self._open = []
        return self.patches


def _group_patch(g: np.ndarray) -> Patch:
    """One patch from the pixels (id, row, col, first, conf, last) of a group of pieces."""
    rows, cols = g[1], g[2]
    r0, c0 = int(rows.min()), int(cols.min())
    mask = np.zeros((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), bool)
    mask[rows - r0, cols - c0] = True
    polys = _polygons(mask, r0, c0)
    if len(polys) != 1:  # pragma: no cover - a group is one 4-connected component by construction
        raise AssertionError(f"a patch at row {r0}, col {c0} polygonized into {len(polys)} polygons")
    conf = g[4]
    return Patch(polys[0], int(g[3][0]), int(g.shape[1]), int((conf == ms.HIGH).sum()), int((conf == ms.LOW).sum()),
                 max(-1, int(g[5].max())))


def derive_alerts(aoi_id: str, state: ms.PixelState, grid: Grid, min_area_ha: float = 0.0,
                  block_size: int | None = None) -> list[dict]:
    """Alert polygons of a whole state in memory: 4-connected patches of pixels whose current event has the
    same first-loss date (blocks of ``block_size``, default one block; the result does not depend on it)."""
    h, w = state.shape
    blocks = BlockGrid(h, w, block_size or max(h, w, 1))
    col = PatchCollector(blocks)
    for i in range(len(blocks)):
        win = blocks.window(i)
        sl = (slice(win.row_off, win.row_end), slice(win.col_off, win.col_end))
        part = ms.PixelState(**{k: v[sl] for k, v in state.arrays().items()}, last_date=state.last_date,
                             n_observations=state.n_observations)
        col.add(i, part)
    return patch_alerts(aoi_id, col.finish(), grid, min_area_ha)
