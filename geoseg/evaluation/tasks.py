"""The per-window task of an evaluation and its spec (paths and numbers only: picklable for processes and
clusters): one small :class:`~geoseg.evaluation.metrics.ConfusionMatrix` per window of the prediction grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg._util.execution import Execution
from geoseg._util.progress import Progress
from geoseg.evaluation.metrics import ConfusionMatrix, confusion_counts
from geoseg.io.grid import Window
from geoseg.io.raster import configure_gdal_cache, read_band

__all__ = ["PairSpec", "WindowCounts", "window_counts", "run_windows"]


@dataclass(frozen=True)
class PairSpec:
    """Everything a window task needs (paths and numbers only: picklable for processes and clusters)."""

    pred_path: str
    truth_path: str
    pred_masked: bool
    truth_masked: bool
    truth_nodata: float | None
    align: bool
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    ignore: tuple[int, ...]


@dataclass(frozen=True)
class WindowCounts:
    confusion: ConfusionMatrix
    nodata: int  # pixels excluded as nodata of either raster
    ignored: int  # valid pixels excluded because their truth is an ignore value

    def __add__(self, other: WindowCounts) -> WindowCounts:
        return WindowCounts(self.confusion + other.confusion, self.nodata + other.nodata,
                            self.ignored + other.ignored)

    @classmethod
    def empty(cls) -> WindowCounts:
        return cls(ConfusionMatrix.empty(), 0, 0)


def _read_truth(spec: PairSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) of the truth over ``window`` of the prediction grid (warped onto it with ``align``)."""
    import rasterio

    with rasterio.open(spec.truth_path) as src:
        if not spec.align:
            return read_band(src, 1, window, spec.truth_masked)
        from affine import Affine
        from rasterio.crs import CRS
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        # Without a nodata value an alpha band marks what lies outside the truth's footprint.
        add_alpha = spec.truth_nodata is None
        with WarpedVRT(src, crs=CRS.from_wkt(spec.crs_wkt), transform=Affine(*spec.transform),
                       width=spec.width, height=spec.height, resampling=Resampling.nearest,
                       add_alpha=add_alpha) as vrt:
            return read_band(vrt, 1, window, True)


def window_counts(spec: PairSpec, window: Window) -> WindowCounts:
    """Confusion matrix and excluded-pixel counts of one window of the prediction grid."""
    import rasterio

    configure_gdal_cache()

    with rasterio.open(spec.pred_path) as src:
        pred, pred_valid = read_band(src, 1, window, spec.pred_masked)
    truth, truth_valid = _read_truth(spec, window)
    valid = pred_valid & truth_valid
    ignored = valid & np.isin(truth, spec.ignore) if spec.ignore else np.zeros(valid.shape, dtype=bool)
    cm = confusion_counts(truth, pred, valid & ~ignored)
    return WindowCounts(cm, int(valid.size - valid.sum()), int(ignored.sum()))


def run_windows(spec: PairSpec, windows: Sequence[Window], execution: Execution, progress: Progress) -> WindowCounts:
    """Run one dask task per window and sum their counts."""
    from geoseg._util.execution import run_each

    total = WindowCounts.empty()
    for wc in run_each(window_counts, windows, "eval-window", spec, execution, progress):
        total = total + wc
    return total
