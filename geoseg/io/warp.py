"""Aligned reads: a pixel grid as a value (:class:`Grid`), a raster read onto it (:func:`read_on_grid`) and
geometries moved between CRSs (:func:`to_crs`).

A read is windowed (boundless) when the raster's pixel lattice matches the grid, else it goes through a
rasterio ``WarpedVRT`` restricted to the grid.  No torch, no dask.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow

from geoseg.errors import InputError, InputFileError
from geoseg.io.grid import Window

__all__ = ["Grid", "sub_grid", "warped", "same_lattice", "read_on_grid", "to_crs", "reproject_geometry"]


@dataclass(frozen=True)
class Grid:
    """A north-up or rotated pixel grid: CRS (WKT), affine transform (a, b, c, d, e, f) and size."""

    crs_wkt: str
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform[:6])


def sub_grid(grid: Grid, window: Window) -> Grid:
    """The pixels ``window`` of ``grid`` as a grid of their own (same CRS and pixel size)."""
    t = grid.affine @ Affine.translation(window.col_off, window.row_off)
    return Grid(grid.crs_wkt, tuple(t)[:6], window.width, window.height)


def _open(path: str) -> Any:
    if not path.lstrip().startswith("<") and not os.path.exists(path):  # "<VRTDataset ...": a product reader's VRT
        raise InputFileError(f"scene {path} does not exist; fix the inventory")
    try:
        return rasterio.open(path)
    except RasterioIOError as e:
        raise InputError(f"cannot open scene {path} as a raster ({e})") from None


def same_lattice(src: Any, grid: Grid) -> RioWindow | None:
    """The window of ``src`` that is ``grid`` when both share CRS, pixel size and pixel corners, else None."""
    a, g = src.transform, grid.affine
    same = src.crs == CRS.from_wkt(grid.crs_wkt) and all(abs(u - v) < 1e-9 * max(1.0, abs(u)) for u, v in
                                                         zip((a.a, a.b, a.d, a.e), (g.a, g.b, g.d, g.e)))
    if not same:
        return None
    c, r = (~a) @ (g.c, g.f)
    if abs(c - round(c)) < 1e-6 and abs(r - round(r)) < 1e-6:
        return RioWindow(round(c), round(r), grid.width, grid.height)
    return None


def warped(src: Any, grid: Grid, resampling: str = "nearest", **options: Any) -> WarpedVRT:
    """A rasterio ``WarpedVRT`` of the open dataset ``src`` on ``grid`` (use it in a ``with``); ``options``
    go to WarpedVRT (``src_nodata``/``nodata``, ``add_alpha``)."""
    return WarpedVRT(src, crs=CRS.from_wkt(grid.crs_wkt), transform=grid.affine, width=grid.width,
                     height=grid.height, resampling=Resampling[resampling], **options)


def read_on_grid(path: str, grid: Grid, bands: Sequence[int] | None = None, resampling: str = "nearest",
                 tolerance: float = 0.125, window: Window | None = None
                 ) -> tuple[np.ndarray, float | None, dict[str, Any], np.ndarray]:
    """Read ``bands`` of ``path`` on ``grid``: a windowed (boundless) read when the scene's lattice matches,
    else a WarpedVRT restricted to the grid. Returns (data (bands,h,w), nodata, profile bits, covered),
    ``covered`` being False where the grid lies outside the scene (needed when the scene has no nodata).
    ``tolerance``: GDAL's error threshold of the approximate transformer, in source pixels (tiny, e.g. 1e-6: in
    effect every pixel transformed exactly, so a pixel's value does not depend on the grid it was read with).
    ``window``: only those pixels of ``grid`` (the same values as that part of a whole read; a warped read
    still warps onto the whole grid's VRT, and reads the window of it)."""
    full = Window(0, 0, grid.height, grid.width)
    w = window or full
    with _open(path) as src:
        bands = list(bands or range(1, src.count + 1))
        nodata = src.nodata
        meta = {"descriptions": [src.descriptions[b - 1] for b in bands], "tags": src.tags(),
                "band_tags": src.tags(bands[0]), "dtype": src.dtypes[bands[0] - 1],
                "scales": [src.scales[b - 1] for b in bands], "offsets": [src.offsets[b - 1] for b in bands]}
        lattice = same_lattice(src, grid)
        if lattice is not None:
            win = RioWindow(lattice.col_off + w.col_off, lattice.row_off + w.row_off, w.width, w.height)
            fill = nodata if nodata is not None else 0
            data = src.read(bands, window=win, boundless=True, fill_value=fill)
            rows = np.arange(win.row_off, win.row_off + w.height)
            cols = np.arange(win.col_off, win.col_off + w.width)
            covered = ((rows >= 0) & (rows < src.height))[:, None] & ((cols >= 0) & (cols < src.width))[None, :]
            return data, nodata, meta, covered
        rw = None if window is None else RioWindow(w.col_off, w.row_off, w.width, w.height)
        if nodata is not None:
            with warped(src, grid, resampling, src_nodata=nodata, nodata=nodata, tolerance=tolerance) as vrt:
                return vrt.read(bands, window=rw), nodata, meta, np.ones((w.height, w.width), bool)
        with warped(src, grid, resampling, add_alpha=True, tolerance=tolerance) as vrt:
            return vrt.read(bands, window=rw), nodata, meta, vrt.read(vrt.count, window=rw) > 0


def reproject_geometry(geom: Any, transformer: Any) -> Any:
    """``geom`` (shapely) with every coordinate passed through a pyproj ``Transformer`` (always_xy)."""
    import shapely

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fn)


def to_crs(geom: Any, src_crs: CRS, dst_crs: CRS) -> Any:
    """``geom`` in ``src_crs`` moved to ``dst_crs`` (unchanged, the same object, when they are equal)."""
    from pyproj import Transformer

    if src_crs == dst_crs:
        return geom
    return reproject_geometry(geom, Transformer.from_crs(src_crs.to_wkt(), dst_crs.to_wkt(), always_xy=True))
