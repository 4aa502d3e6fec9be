"""The block task of a mosaic and its spec (paths and numbers only: picklable for processes and clusters).

Each task reads every input that may cover its block onto the block's grid (a windowed read where the input
shares the grid's lattice, else a rasterio ``WarpedVRT``, nearest neighbour: class codes are never mixed),
chooses each pixel's input by the rule (:mod:`geoseg.mosaic.rules`) and streams the block into the temporary
GeoTIFFs, so memory is bounded by the blocks in flight, whatever the mosaic's size.  Warps transform every
pixel exactly (no approximation whose error depends on the block's extent), so the mosaic does not depend on
the block size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine

from geoseg.io.grid import Window
from geoseg.io.warp import Grid, read_on_grid
from geoseg.mosaic.rules import CLOUD, NODATA, compose, observed, winners

#: the warp's error threshold in source pixels: in effect exact (rasterio refuses 0), so a pixel's source does
#: not depend on the block it is read with
EXACT = 1e-6

__all__ = ["Source", "MosaicSpec", "BlockJob", "mosaic_block", "mosaic_block_task"]


@dataclass(frozen=True)
class Source:
    """One input's rasters (``confidence``/``probabilities`` only when the mosaic writes them); ``stack``: a VRT
    (XML) of its class map and confidence as two bands, so a warped read transforms the pixels once for both."""

    landcover: str
    confidence: str | None
    probabilities: str | None
    stack: str | None = None


@dataclass(frozen=True)
class MosaicSpec:
    """Everything a block task needs: the inputs in rule order, the output grid, the rule, the temporaries."""

    sources: tuple[Source, ...]
    grid: Grid
    rule: str
    landcover_part: str
    confidence_part: str | None = None
    probabilities_part: str | None = None
    n_probability_bands: int = 0


@dataclass(frozen=True)
class BlockJob:
    """One block of the output grid and the inputs (indices into ``MosaicSpec.sources``) that may cover it."""

    window: Window
    inputs: tuple[int, ...]


def block_grid(grid: Grid, window: Window) -> Grid:
    """The grid of ``window`` of ``grid``."""
    t = grid.affine @ Affine.translation(window.col_off, window.row_off)
    return Grid(grid.crs_wkt, tuple(t)[:6], window.width, window.height)


def _read(path: str, grid: Grid) -> np.ndarray:
    """(bands, h, w) uint8 of ``path`` on ``grid``; nodata (255) outside the raster."""
    data, _, _, covered = read_on_grid(path, grid, tolerance=EXACT)
    data = data.astype(np.uint8, copy=False)
    data[:, ~covered] = NODATA
    return data


def mosaic_block(spec: MosaicSpec, job: BlockJob) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The products of one block (``landcover`` (h, w), ``confidence`` (h, w), ``probabilities`` (bands, h,
    w)) and the pixels each of ``job.inputs`` gave (no writing)."""
    w = job.window
    grid = block_grid(spec.grid, w)
    sources = [spec.sources[i] for i in job.inputs]
    with_conf = spec.confidence_part is not None  # the rule confidence makes the mosaic write one
    out: dict[str, np.ndarray]
    if not sources:  # outside every input
        out = {"landcover": np.full((w.height, w.width), NODATA, np.uint8)}
        if spec.confidence_part is not None:
            out["confidence"] = out["landcover"].copy()
        if spec.probabilities_part is not None:
            out["probabilities"] = np.full((spec.n_probability_bands, w.height, w.width), NODATA, np.uint8)
        return out, np.zeros(0, np.int64)
    if with_conf:
        both = np.stack([_read(s.stack or "", grid)[:2] for s in sources])  # (n, 2, h, w)
        classes, conf = both[:, 0], both[:, 1]
    else:
        classes, conf = np.stack([_read(s.landcover, grid)[0] for s in sources]), None
    obs = observed(classes, conf)
    idx = winners(obs, conf, spec.rule)
    out = {"landcover": compose(classes, idx)}
    if spec.confidence_part is not None and conf is not None:
        cloud = ((conf == CLOUD) & (classes == NODATA)).any(axis=0)  # masked in some scene, observed in none
        out["confidence"] = compose(conf, idx, np.where(cloud, CLOUD, NODATA).astype(np.uint8))
    if spec.probabilities_part is not None:
        probs = np.full((spec.n_probability_bands, w.height, w.width), NODATA, np.uint8)
        for k, s in enumerate(sources):
            won = idx == k
            if won.any():
                probs[:, won] = _read(s.probabilities or "", grid)[:, won]
        out["probabilities"] = probs
    won_pixels = np.bincount(idx[idx >= 0].ravel(), minlength=len(sources)).astype(np.int64)
    return out, won_pixels


def mosaic_block_task(spec: MosaicSpec, job: BlockJob) -> tuple[np.ndarray, dict[int, int]]:
    """Compute one block and stream it into the temporaries; (the class histogram (256 bins), pixels won per
    input index)."""
    from geoseg.io.output import write_block
    from geoseg.io.raster import configure_gdal_cache

    if not job.inputs:  # outside every input: the temporaries are sparse, an unwritten block reads as nodata
        hist = np.zeros(256, np.int64)
        hist[NODATA] = job.window.height * job.window.width
        return hist, {}
    configure_gdal_cache()
    out, won = mosaic_block(spec, job)
    write_block(spec.landcover_part, job.window, out["landcover"])
    if spec.confidence_part is not None:
        write_block(spec.confidence_part, job.window, out["confidence"])
    if spec.probabilities_part is not None:
        write_block(spec.probabilities_part, job.window, out["probabilities"])
    hist = np.bincount(out["landcover"].ravel(), minlength=256).astype(np.int64)
    return hist, {job.inputs[k]: int(n) for k, n in enumerate(won) if n}
