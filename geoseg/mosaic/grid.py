"""The mosaic's output grid, decided once before any work: ``like`` (another raster's grid) or ``crs`` +
``res`` (+ ``bounds``, by default the union of the inputs' footprints in that CRS), corners snapped outward to
multiples of the pixel size (as ``gdalwarp -tap``); and where each input lies on it.  No torch, no dask."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import rasterio
import rasterio.warp
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError

from geoseg.errors import InputError, InputFileError, ParameterError
from geoseg.io.grid import Window
from geoseg.io.warp import Grid
from geoseg.mosaic.inputs import MosaicInput

__all__ = ["plan_grid", "footprint", "parse_numbers"]

#: the largest mosaic grid accepted (pixels per side): a typo in --res must not plan a billion blocks
MAX_SIDE = 1_000_000


def parse_numbers(value: str | Sequence[float] | float | None, n: Sequence[int], option: str, example: str
                  ) -> tuple[float, ...] | None:
    """``'10'`` / ``'10,10'`` / ``(1, 2, 3, 4)`` -> floats; ``n``: the accepted counts."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            out = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
        elif isinstance(value, (int, float)):
            out = (float(value),)
        else:
            out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) not in n or not all(math.isfinite(v) for v in out):
        raise ParameterError(f"{option} {value!r} is not {' or '.join(map(str, n))} numbers; use e.g. {option} "
                             f"{example}")
    return out


def _crs(value: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except CRSError:
        raise ParameterError(f"--crs {value!r} is not a CRS; give e.g. EPSG:32631") from None


def _like(path: str | os.PathLike) -> Grid:
    if not os.path.exists(path):
        raise InputFileError(f"--like {path} does not exist; give a raster whose grid the mosaic should take")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"--like {path} has no CRS; give a georeferenced raster")
            return Grid(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
    except RasterioIOError as e:
        raise InputError(f"--like {path} is not a readable raster ({e})") from None


def _union(inputs: Sequence[MosaicInput], crs: CRS) -> tuple[float, float, float, float]:
    boxes = [rasterio.warp.transform_bounds(CRS.from_wkt(s.crs_wkt), crs, *s.bounds, densify_pts=21)
             for s in inputs]
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _default_res(inputs: Sequence[MosaicInput], crs: CRS) -> tuple[float, float]:
    for s in inputs:
        if CRS.from_wkt(s.crs_wkt) == crs and s.transform[1] == 0 and s.transform[3] == 0:
            return abs(s.transform[0]), abs(s.transform[4])
    raise ParameterError(f"no input is in {crs.to_string()}, so the pixel size is not known; give --res, e.g. --res 10")


def plan_grid(inputs: Sequence[MosaicInput], *, crs: str | None = None,
              res: str | Sequence[float] | float | None = None, bounds: str | Sequence[float] | None = None,
              like: str | os.PathLike | None = None) -> Grid:
    """The output grid (see the module docstring); ``crs`` defaults to the first input's, ``res`` to the pixel
    size of the first input in that CRS."""
    if like is not None:
        given = [o for o, v in (("--crs", crs), ("--res", res), ("--bounds", bounds)) if v is not None]
        if given:
            raise ParameterError(f"--like gives the whole grid; drop {', '.join(given)} or --like")
        return _like(like)
    target = _crs(crs) if crs is not None else CRS.from_wkt(inputs[0].crs_wkt)
    r = parse_numbers(res, (1, 2), "--res", "10")
    rx, ry = (r[0], r[-1]) if r is not None else _default_res(inputs, target)
    if rx <= 0 or ry <= 0:
        raise ParameterError(f"--res {res!r} must be positive; use e.g. --res 10")
    box = parse_numbers(bounds, (4,), "--bounds", "600000,4990000,620000,5010000")
    if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
        raise ParameterError(f"--bounds {bounds!r} must be xmin,ymin,xmax,ymax with xmin < xmax and ymin < ymax")
    x0, y0, x1, y1 = box if box is not None else _union(inputs, target)
    # snapped outward to the pixel size (a tiny tolerance keeps exact multiples where they are)
    x0, x1 = math.floor(x0 / rx + 1e-9) * rx, math.ceil(x1 / rx - 1e-9) * rx
    y0, y1 = math.floor(y0 / ry + 1e-9) * ry, math.ceil(y1 / ry - 1e-9) * ry
    width, height = round((x1 - x0) / rx), round((y1 - y0) / ry)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ParameterError(f"the mosaic grid would be {width} x {height} px; check --res ({rx:g}) and --bounds "
                             f"(in the units of {target.to_string()})")
    return Grid(target.to_wkt(), (rx, 0.0, x0, 0.0, -ry, y1), width, height)


def footprint(s: MosaicInput, grid: Grid) -> Window | None:
    """The pixels of ``grid`` that ``s`` may cover (its footprint's bounding box, one pixel wider), or None."""
    x0, y0, x1, y1 = rasterio.warp.transform_bounds(CRS.from_wkt(s.crs_wkt), CRS.from_wkt(grid.crs_wkt),
                                                    *s.bounds, densify_pts=21)
    inv = ~grid.affine
    cols, rows = zip(*(inv @ (x, y) for x in (x0, x1) for y in (y0, y1)))
    r0, c0 = max(0, math.floor(min(rows)) - 1), max(0, math.floor(min(cols)) - 1)
    r1, c1 = min(grid.height, math.ceil(max(rows)) + 1), min(grid.width, math.ceil(max(cols)) + 1)
    if r1 <= r0 or c1 <= c0:
        return None
    return Window(r0, c0, r1 - r0, c1 - c0)
