"""``--cloud-mask detect``: clouds detected from the pixels by s2cloudless, for a Sentinel-2 L1C product
without a usable mask of its own (the optional extra ``geoseg[clouds]``; docs/clouds.md).

Two steps, so that every refusal comes before any work:

1. :func:`plan_detection` (while a run is planned): s2cloudless is installed, the scene is a Sentinel-2
   L1C product in top-of-atmosphere reflectance (an L2A is refused: the detector was trained on L1C and
   L2A has no B10), and the product has the ten bands the detector reads (:data:`DETECTOR_BANDS`),
   opened as their own stacked VRT (``open_input(wanted=DETECTOR_BANDS)``).
2. :func:`detect_clouds` (inside the run, before prediction): the ten bands are read decimated to about
   :data:`RESOLUTION_M` (GDAL ``average``, reflectance through each band's scale/offset) in strips of
   :data:`STRIP_ROWS` coarse rows with a halo (so the detector's smoothing and dilation see across strip
   edges), never the 10 m scene in memory; the coarse mask (uint8, 1 = cloud, 0 = clear, 255 = no data)
   is written into the run's scratch folder and handed on as a :class:`~geoseg.io.clouds.CloudMask` of kind
   ``detected`` read NEAREST onto the scene's grid (as ``--cloud-mask RASTER``), so blending, 255 and 254
   work unchanged; its ``detector`` (run.json) says what detected the clouds, with which settings.

s2cloudless's LightGBM model ships in its wheel: nothing is downloaded (its ``sentinelhub`` dependency is
imported by the package but never called here).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window as RioWindow

from geoseg._util.atomic import atomic_path
from geoseg.errors import MissingBandError, ParameterError, UnreadableBandError
from geoseg.io.clouds import CloudMask, user_cloud_mask
from geoseg.io.raster import SceneInfo
from geoseg.io.sources import SceneSource

__all__ = ["DETECT", "DETECTOR_BANDS", "DetectorPlan", "detect_clouds", "is_detect", "plan_detection"]

DETECT = "detect"
#: the bands s2cloudless reads, in its order (B1, B2, B4, B5, B8, B8A, B9, B10, B11, B12)
DETECTOR_BANDS = ("B1", "B2", "B4", "B5", "B8", "B8A", "B9", "B10", "B11", "B12")
RESOLUTION_M = 60.0  # the grid the detector runs on (the 60 m bands' own)
THRESHOLD = 0.4  # s2cloudless's default cloud probability threshold
AVERAGE_OVER = 4  # disk radius (coarse pixels) the probabilities are averaged over (s2cloudless README)
DILATION_SIZE = 2  # disk radius (coarse pixels) the mask is dilated by (s2cloudless README)
STRIP_ROWS = 256  # coarse rows per read (10 bands x 256 x 1830 x 4 bytes = 19 MB for a full tile)
NODATA = 255
INSTALL = "pip install 'geoseg[clouds]'"


def is_detect(choice: str | os.PathLike | None) -> bool:
    """Whether a ``--cloud-mask`` value asks for detection."""
    return choice is not None and str(choice).lower() == DETECT


def _s2cloudless() -> Any:
    try:
        import s2cloudless
    except ImportError:
        raise ParameterError(f"--cloud-mask detect needs s2cloudless, which is not installed ({INSTALL}); or "
                             "pass --cloud-mask auto|none|RASTER") from None
    return s2cloudless


@dataclass(frozen=True)
class DetectorPlan:
    """What :func:`detect_clouds` reads (the ten bands' stacked VRT) and the scene grid the mask is for."""

    dataset: str
    origin: str
    crs_wkt: str | None
    transform: tuple[float, ...]
    width: int
    height: int


def plan_detection(scene: str | os.PathLike | None, band_files: Mapping[str, str] | None, info: SceneInfo,
                   source: SceneSource | None) -> DetectorPlan:
    """Check that ``scene`` (read as ``info``/``source`` for the model) can be detected and open its ten
    detector bands; one-line errors naming the fix otherwise (see the module docstring)."""
    from geoseg.io.inputs import open_input

    _s2cloudless()
    where = info.path
    if source is None:
        raise ParameterError(f"{where}: --cloud-mask detect needs a Sentinel-2 L1C product (.SAFE or STAC Item) with "
                             f"its bands {', '.join(DETECTOR_BANDS)}, not a plain raster; pass --cloud-mask RASTER")
    if source.level not in ("L1C",) or source.quantity != "toa_reflectance" or source.sensor != "sentinel-2":
        what = f"a {source.sensor or 'unknown sensor'} {source.level or 'unknown level'} product"
        raise ParameterError(f"{where}: {what}; --cloud-mask detect (s2cloudless) works on Sentinel-2 L1C top-of-"
                             "atmosphere reflectance only: use the product's own mask (--cloud-mask auto, e.g. an "
                             "L2A's SCL) or --cloud-mask RASTER")
    try:
        dinfo, _ = open_input(scene, band_files=band_files, wanted=DETECTOR_BANDS)
    except MissingBandError as exc:
        text = str(exc).split(";")[0]
        raise MissingBandError(f"{text}; --cloud-mask detect (s2cloudless) needs {', '.join(DETECTOR_BANDS)}: use "
                               "the complete L1C product, or --cloud-mask auto|none|RASTER") from None
    return DetectorPlan(dinfo.gdal_name, where, info.crs_wkt, tuple(info.transform), info.width, info.height)


def _spans(n_coarse: int, n_src: int, f: int, a: int, b: int) -> list[tuple[int, int, int, int]]:
    """The coarse range [a, b) as (coarse0, coarse1, src0, src1) pieces of exactly ``f`` source pixels per
    coarse pixel, and the last coarse pixel (fewer than ``f`` source pixels) as a piece of its own."""
    full = n_src // f
    out = []
    if a < min(b, full):
        out.append((a, min(b, full), a * f, min(b, full) * f))
    if n_src % f and a <= full < b and full < n_coarse:
        out.append((full, full + 1, full * f, n_src))
    return out


def _read_coarse(src: Any, f: int, shape: tuple[int, int], r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """Coarse rows [r0, r1) of every band as reflectance ``(rows, cols, bands)`` float32 and a valid mask."""
    rows, cols = r1 - r0, shape[1]
    refl = np.zeros((rows, cols, src.count), dtype=np.float32)
    valid = np.zeros((rows, cols), dtype=bool)
    for ra, rb, sa, sb in _spans(shape[0], src.height, f, r0, r1):
        for ca, cb, ta, tb in _spans(shape[1], src.width, f, 0, cols):
            raw = src.read(window=RioWindow(ta, sa, tb - ta, sb - sa), out_shape=(src.count, rb - ra, cb - ca),
                           resampling=Resampling.average, masked=True)
            piece = raw.filled(0).astype(np.float32)
            for i in range(src.count):
                piece[i] = piece[i] * (src.scales[i] or 1.0) + (src.offsets[i] or 0.0)
            refl[ra - r0:rb - r0, ca:cb] = np.clip(np.moveaxis(piece, 0, -1), 0.0, 1.0)
            valid[ra - r0:rb - r0, ca:cb] = ~np.ma.getmaskarray(raw).any(axis=0)
    refl[~valid] = 0.0
    return refl, valid


def _detect(plan: DetectorPlan, detector: Any, out: Path) -> tuple[int, int, float]:
    """Run ``detector`` over ``plan``'s bands strip by strip into the GeoTIFF ``out``; (cloudy, valid coarse
    pixels, the coarse resolution in metres)."""
    halo = AVERAGE_OVER + DILATION_SIZE + 1
    cloudy = counted = 0
    with rasterio.open(plan.dataset) as src:
        f = max(1, round(RESOLUTION_M / abs(src.transform.a)))
        shape = (math.ceil(src.height / f), math.ceil(src.width / f))
        profile = {"driver": "GTiff", "width": shape[1], "height": shape[0], "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform @ Affine.scale(f), "nodata": NODATA, "tiled": True,
                   "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with atomic_path(out, fsync=False) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for r0 in range(0, shape[0], STRIP_ROWS):
                r1 = min(shape[0], r0 + STRIP_ROWS)
                h0, h1 = max(0, r0 - halo), min(shape[0], r1 + halo)
                try:
                    refl, valid = _read_coarse(src, f, shape, h0, h1)
                except RasterioIOError as exc:  # an OSError: raised as itself, not as a failed write of ``out``
                    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise UnreadableBandError(f"{plan.origin}: cannot read its bands for the cloud detection "
                                              f"({text}); the product is damaged: download it again") from None
                prob = detector.get_cloud_probability_maps(refl[None])
                mask = detector.get_mask_from_prob(prob)[0, r0 - h0:r1 - h0].astype(np.uint8)
                ok = valid[r0 - h0:r1 - h0]
                mask[~ok] = NODATA
                cloudy += int((mask == 1).sum())
                counted += int(ok.sum())
                dst.write(mask, 1, window=RioWindow(0, r0, shape[1], r1 - r0))
        resolution = round(abs(src.transform.a) * f, 3)
    return cloudy, counted, resolution


def detect_clouds(plan: DetectorPlan, work_dir: str | os.PathLike) -> CloudMask:
    """Detect the clouds of ``plan``'s product (module docstring), write the coarse mask into ``work_dir``
    (a run's scratch folder) and return it as a CloudMask of kind ``detected`` on the scene's grid."""
    s2c = _s2cloudless()
    t0 = time.perf_counter()
    detector = s2c.S2PixelCloudDetector(threshold=THRESHOLD, average_over=AVERAGE_OVER, dilation_size=DILATION_SIZE,
                                        all_bands=False)
    out = Path(work_dir) / "clouds_detected.tif"
    out.parent.mkdir(parents=True, exist_ok=True)
    cloudy, counted, resolution = _detect(plan, detector, out)
    settings = (("detector", "s2cloudless"), ("version", str(getattr(s2c, "__version__", "?"))),
                ("model", "pixel_s2_cloud_detector_lightGBM_v0.1 (in the s2cloudless wheel)"),
                ("threshold", THRESHOLD), ("average_over", AVERAGE_OVER), ("dilation_size", DILATION_SIZE),
                ("resolution_m", resolution), ("bands", ",".join(DETECTOR_BANDS)),
                ("cloud_fraction", round(cloudy / counted, 6) if counted else 0.0),
                ("seconds", round(time.perf_counter() - t0, 3)))
    mask = user_cloud_mask(str(out), plan.crs_wkt, plan.transform, plan.width, plan.height)
    return replace(mask, kind="detected", origin=plan.origin, detector=settings)
