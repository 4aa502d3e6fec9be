"""The per-window task of ``detect_change`` and its spec (paths and numbers only: picklable for processes
and clusters).

Each task reads both dates over one window of the BEFORE grid (rasters on another grid warped onto it
through a rasterio ``WarpedVRT``), classifies, and streams its block into the temporary change GeoTIFF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.change.classify import classify_change, forest_threshold, probability
from geoseg.io.codes import GAIN, LOSS, NO_CHANGE, UNOBSERVED
from geoseg.io.grid import Window
from geoseg.io.raster import configure_gdal_cache, read_band
from geoseg.io.warp import Grid, warped

__all__ = ["Layer", "ChangeSpec", "read_layer", "change_block", "change_window_task"]


@dataclass(frozen=True)
class Layer:
    """One raster read by the window tasks: path, band and how to tell its valid pixels."""

    path: str
    band: int
    width: int
    height: int
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    masked: bool  # has nodata or a mask band: read masks
    dtype: str
    warp: bool = False  # resample onto the reference grid
    resampling: str = "nearest"


@dataclass(frozen=True)
class ChangeSpec:
    """Everything a window task needs (paths and numbers only: picklable for processes and clusters)."""

    mode: str  # "classes" or "probability"
    before: Layer
    after: Layer
    before_mask: Layer | None
    after_mask: Layer | None
    # classes: forest class values per date
    before_forest: tuple[int, ...]
    after_forest: tuple[int, ...]
    # probability: forest when value * scale >= threshold / 100 (scale: to 0..1)
    threshold: float
    before_scale: float
    after_scale: float
    # the reference (BEFORE) grid
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    part: str  # the temporary change GeoTIFF

    @property
    def grid(self) -> Grid:
        """The reference grid (a warped read needs a CRS: the inputs check refuses a warp without one)."""
        return Grid(self.crs_wkt or "", self.transform, self.width, self.height)


def read_layer(layer: Layer, spec: ChangeSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) of ``layer`` over ``window`` of the reference grid."""
    import rasterio

    with rasterio.open(layer.path) as src:
        if not layer.warp:
            data, valid = read_band(src, layer.band, window, layer.masked)
        else:

            # Without a nodata value an alpha band marks what lies outside the source's footprint.
            with warped(src, spec.grid, layer.resampling, add_alpha=layer.nodata is None) as vrt:
                data, valid = read_band(vrt, layer.band, window, True)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    return data, valid


def change_block(spec: ChangeSpec, window: Window) -> np.ndarray:
    """The change codes of one window of the BEFORE grid (no writing)."""
    b, b_valid = read_layer(spec.before, spec, window)
    a, a_valid = read_layer(spec.after, spec, window)
    observed = b_valid & a_valid
    for m in (spec.before_mask, spec.after_mask):
        if m is not None:
            mv, m_valid = read_layer(m, spec, window)
            observed &= m_valid & (mv != 0)
    if spec.mode == "classes":
        bf = np.isin(b, spec.before_forest)
        af = np.isin(a, spec.after_forest)
    else:
        t = forest_threshold(spec.threshold)
        bf = probability(b, b_valid, spec.before_scale, spec.before.path, spec.before.dtype) >= t
        af = probability(a, a_valid, spec.after_scale, spec.after.path, spec.after.dtype) >= t
    return classify_change(bf, af, observed)


def change_window_task(spec: ChangeSpec, window: Window) -> np.ndarray:
    """Compute one window, stream it into the temporary GeoTIFF; return its counts of codes 0, 1, 2, 255."""
    from geoseg.io.output import write_block

    configure_gdal_cache()
    codes = change_block(spec, window)
    write_block(spec.part, window, codes)
    hist = np.bincount(codes.ravel(), minlength=256)
    return hist[[NO_CHANGE, LOSS, GAIN, UNOBSERVED]].astype(np.int64)
