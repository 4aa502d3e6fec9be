"""``detect_change``: forest loss/gain between two dates, the Python API behind ``geoseg change``.

Two land-cover class rasters (forest = some class values) or two forest-probability rasters
(forest = probability >= threshold) are compared pixel by pixel on the BEFORE raster's grid::

    0    no change        observed in both dates, forest both times or non-forest both times
    1    forest loss      forest before, not forest after
    2    forest gain      not forest before, forest after
    255  unobserved       nodata / masked (clouds) in either date, or outside AFTER's footprint

Unobserved is *not* "no change".  The work is one dask task per window of the BEFORE grid
(:func:`geoseg._util.execution.execute`: threads, processes or ``tcp://``): each task reads both dates (the
AFTER raster and the masks warped onto the BEFORE grid through a rasterio ``WarpedVRT`` when
``align``), classifies, and streams its block into the temporary change GeoTIFF
(:mod:`geoseg.output`), so memory is bounded by the windows in flight.

Delivery: ``change.qml`` (QGIS paletted style), a single-symbol default style in ``loss.gpkg``'s
``layer_styles``, ``change_quicklook.png`` (before / after / change), ``report.html`` and, last (it records
every other file's checksum), the STAC Item ``item.json``.

Loss polygons: :func:`geoseg.vectorize.vectorize_raster` polygonizes the ``forest_loss`` class
of the finished change raster (seamless across blocks); each polygon is then one connected
patch of loss pixels exactly, and the minimum mapping unit *drops* patches smaller than
``min_area_ha`` (rather than sieving them into a neighbour: see docs/change.md), and adds
``n_pixels`` and the WGS84 centroid.  Outputs are written to temporary names and renamed into
place only when everything succeeded: ``change.tif`` (COG), ``loss.gpkg``, ``change.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geoseg.errors import (
    EmptySceneError,
    GridMismatchError,
    InputError,
    InputFileError,
    NotGeoreferencedError,
    ParameterError,
)
from geoseg.io.codes import CHANGE_CLASSES, GAIN, LOSS, NO_CHANGE, UNOBSERVED
from geoseg.io.grid import BLOCK_ALIGN, Window, align_up
from geoseg.io.output import GPKG_DATASET_OPTIONS
from geoseg.io.raster import configure_gdal_cache, grid_differences, pixel_area_m2, read_band

__all__ = ["detect_change", "ChangeResult", "ChangeSpec", "ChangeCounts", "PRESETS", "CHANGE_CLASSES",
           "parse_min_area", "change_block", "classify_change"]




def change_class_info():
    """The change classes as :class:`~geoseg.model.card.ClassInfo` (for styles and quicklooks)."""
    from geoseg.model.card import ClassInfo

    return [ClassInfo(v, n, "#{:02X}{:02X}{:02X}".format(*rgba[:3])) for v, (n, rgba) in CHANGE_CLASSES.items()]


#: Minimum mapping units (hectares) by preset name.
PRESETS: dict[str, float] = {"default": 0.3, "prodes": 6.25}
DEFAULT_MIN_AREA_HA = PRESETS["default"]
DEFAULT_THRESHOLD = 50.0
DEFAULT_BLOCK_SIZE = 1024
OUTPUT_NAMES = ("change.tif", "loss.gpkg", "change.json", "change.qml", "change_quicklook.png", "report.html",
                "item.json")
LOSS_LAYER = "loss"
#: Features per read/write when the loss polygons are post-processed.
POLYGON_CHUNK = 50_000


# -- options -----------------------------------------------------------------------------------------

_AREA = re.compile(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ha|m2|m²|km2|km²)")
_HA_PER_UNIT = {"ha": 1.0, "m2": 1e-4, "m²": 1e-4, "km2": 100.0, "km²": 100.0}


def parse_min_area(value: str | float | int | None, preset: str | None = None) -> float:
    """``--min-area``/``--preset`` -> hectares.

    Strings need a unit (``0.3ha``, ``3000m2``, ``0.01km2``): a bare number is refused because
    ``geoseg vectorize`` reads bare numbers as m² while MMUs are usually quoted in hectares.
    Numbers (the Python API) are hectares.  Neither given: the ``default`` preset (0.3 ha).
    """
    if preset is not None:
        key = str(preset).strip().lower()
        if key not in PRESETS:
            raise ParameterError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if value is not None:
            raise ParameterError(f"give --preset {preset} or --min-area, not both")
        return PRESETS[key]
    if value is None:
        return DEFAULT_MIN_AREA_HA
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        ha = float(value)
    else:
        m = _AREA.fullmatch(str(value).strip().lower())
        if not m:
            raise ParameterError(
                f"--min-area {value!r} needs a unit; give e.g. 0.3ha, 3000m2 or 0.01km2 (0 keeps every patch)"
            )
        ha = float(m.group(1)) * _HA_PER_UNIT[m.group(2)]
    if not math.isfinite(ha) or ha < 0:
        raise ParameterError(f"--min-area {value!r} must be a non-negative area, e.g. 0.3ha")
    return ha


def _forest_items(forest: str | int | Sequence[str | int] | None) -> list[str | int]:
    if forest is None:
        forest = "trees"
    if isinstance(forest, (int, np.integer)):
        return [int(forest)]
    items = [s.strip() for s in forest.split(",")] if isinstance(forest, str) else [
        s.strip() if isinstance(s, str) else s for s in forest]
    items = [s for s in items if s != ""]
    if not items:
        raise ParameterError("--forest is empty; give forest class names or values, e.g. --forest trees or 1")
    out: list[str | int] = []
    for s in items:
        if isinstance(s, (int, np.integer)):
            out.append(int(s))
        elif isinstance(s, str) and re.fullmatch(r"-?\d+", s):
            out.append(int(s))
        else:
            out.append(str(s))
    return out


def resolve_forest_values(items: Sequence[str | int], names: dict[int, str], path: str) -> tuple[int, ...]:
    """Forest class values of one class raster: values as given, names via its ``CLASS_<v>`` tags."""
    by_name = {n.casefold(): v for v, n in names.items()}
    out = set()
    for item in items:
        if isinstance(item, int):
            out.add(item)
        elif item.casefold() in by_name:
            out.add(by_name[item.casefold()])
        elif not names:
            raise ParameterError(
                f"forest class {item!r} cannot be resolved: {path} has no class names (no CLASS_<value> band "
                "tags); give forest class values instead, e.g. --forest 1"
            )
        else:
            known = ", ".join(f"{n} ({v})" for v, n in sorted(names.items()))
            raise ParameterError(
                f"forest class {item!r} is not a class of {path} (classes: {known}); "
                "give a class name or value with --forest, e.g. --forest 1"
            )
    return tuple(sorted(out))


# -- inputs ------------------------------------------------------------------------------------------


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


def _inspect(path: str | os.PathLike, role: str) -> tuple[Any, dict[int, str], tuple[float, ...]]:
    """(SceneInfo, class names from CLASS_<v> tags, band scales) of an input raster."""
    import rasterio

    from geoseg.io.raster import class_names_from_tags, open_scene

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"{role} raster {path} does not exist; check the path")
    info = open_scene(path, allow_ungeoreferenced=True)
    if not info.georeferenced:
        what = "CRS" if info.crs_wkt is None else "geotransform"
        raise NotGeoreferencedError(
            f"{role} raster {path} has no {what}; change areas and polygons need one: georeference it "
            "(e.g. gdal_edit.py -a_srs EPSG:<code> -a_ullr <ulx> <uly> <lrx> <lry>)"
        )
    with rasterio.open(path) as src:
        names = class_names_from_tags(src.tags(), src.tags(1))
        scales = tuple(float(s) if s else 1.0 for s in src.scales)
    return info, names, scales


def _layer(info, band: int, warp: bool = False, resampling: str = "nearest") -> Layer:
    return Layer(path=os.path.abspath(info.path), band=band, width=info.width, height=info.height,
                 crs_wkt=info.crs_wkt, transform=info.transform, nodata=info.nodata,
                 masked=info.per_dataset_mask, dtype=info.dtype, warp=warp, resampling=resampling)


# -- the per-window task -----------------------------------------------------------------------------


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


def _read(layer: Layer, spec: ChangeSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) of ``layer`` over ``window`` of the reference grid."""
    import rasterio

    with rasterio.open(layer.path) as src:
        if not layer.warp:
            data, valid = read_band(src, layer.band, window, layer.masked)
        else:
            from affine import Affine
            from rasterio.crs import CRS
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            # Without a nodata value an alpha band marks what lies outside the source's footprint.
            with WarpedVRT(src, crs=CRS.from_wkt(spec.crs_wkt), transform=Affine(*spec.transform),
                           width=spec.width, height=spec.height, resampling=Resampling[layer.resampling],
                           add_alpha=layer.nodata is None) as vrt:
                data, valid = read_band(vrt, layer.band, window, True)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    return data, valid


def _probability(data: np.ndarray, valid: np.ndarray, scale: float, layer: Layer) -> np.ndarray:
    """Values -> probability 0..1 (float64); InputError on valid values outside 0..1."""
    p = data.astype(np.float64) * scale
    v = p[valid]
    if v.size and (v.min() < -1e-6 or v.max() > 1 + 1e-6):
        unit = "0..1" if np.issubdtype(np.dtype(layer.dtype), np.floating) and scale == 1.0 else "0..100 percent"
        raise InputError(
            f"{layer.path} holds values outside {unit} (min {v.min() / scale:g}, max {v.max() / scale:g}); "
            "give forest probabilities (float 0..1, or uint8 percent 0..100 with nodata 255 as geoseg writes)"
        )
    return p


def classify_change(before_forest: np.ndarray, after_forest: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-pixel change codes (uint8) from forest masks of both dates and the observed mask."""
    out = np.full(observed.shape, UNOBSERVED, dtype=np.uint8)
    out[observed] = NO_CHANGE
    out[observed & before_forest & ~after_forest] = LOSS
    out[observed & ~before_forest & after_forest] = GAIN
    return out


def change_block(spec: ChangeSpec, window: Window) -> np.ndarray:
    """The change codes of one window of the BEFORE grid (no writing)."""
    b, b_valid = _read(spec.before, spec, window)
    a, a_valid = _read(spec.after, spec, window)
    observed = b_valid & a_valid
    for m in (spec.before_mask, spec.after_mask):
        if m is not None:
            mv, m_valid = _read(m, spec, window)
            observed &= m_valid & (mv != 0)
    if spec.mode == "classes":
        bf = np.isin(b, spec.before_forest)
        af = np.isin(a, spec.after_forest)
    else:
        t = spec.threshold / 100.0 - 1e-9  # values exactly at the threshold are forest
        bf = _probability(b, b_valid, spec.before_scale, spec.before) >= t
        af = _probability(a, a_valid, spec.after_scale, spec.after) >= t
    return classify_change(bf, af, observed)


def change_window_task(spec: ChangeSpec, window: Window) -> np.ndarray:
    """Compute one window, stream it into the temporary GeoTIFF; return its counts of codes 0, 1, 2, 255."""
    from geoseg.io.output import write_block

    configure_gdal_cache()
    codes = change_block(spec, window)
    write_block(spec.part, window, codes)
    hist = np.bincount(codes.ravel(), minlength=256)
    return hist[[NO_CHANGE, LOSS, GAIN, UNOBSERVED]].astype(np.int64)


def plan_windows(height: int, width: int, block_size: int) -> list[Window]:
    """Row-major windows of ``block_size`` (a multiple of the GeoTIFF tile) covering the raster."""
    return [Window(r, c, min(block_size, height - r), min(block_size, width - c))
            for r in range(0, height, block_size) for c in range(0, width, block_size)]


# -- loss polygons -----------------------------------------------------------------------------------


def _loss_polygons(change_path: str, work_dir: Path, final_tmp: Path, *, min_area_ha: float, connectivity: int,
                   transform: Sequence[float], crs_wkt: str, workers: int, scheduler: str,
                   block_size: int) -> tuple[int, float, int]:
    """Vectorize forest loss, drop patches under the MMU, add n_pixels/centroid; write ``final_tmp``.

    Returns (polygons kept, their area ha, polygons dropped by the MMU).
    """
    import warnings

    import geopandas as gpd
    import pyogrio
    import shapely
    from affine import Affine
    from pyproj import CRS as PCRS
    from pyproj import Transformer

    from geoseg.vector.api import vectorize_raster

    raw = work_dir / "loss-raw.gpkg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vres = vectorize_raster(change_path, raw, layer=LOSS_LAYER, classes=["forest_loss"],
                                connectivity=connectivity, block_size=max(block_size, 256), workers=workers,
                                scheduler=scheduler, overwrite=True, progress=False, style=False)  # a temporary
    inv = ~Affine(*transform[:6])
    a, b, c, d, e, f = inv.a, inv.b, inv.c, inv.d, inv.e, inv.f

    def to_pixels(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    crs = PCRS.from_wkt(crs_wkt)
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    kept = dropped = 0
    kept_ha = 0.0
    written = False
    min_m2 = min_area_ha * 1e4 * (1 - 1e-9)
    for start in range(0, max(vres.features, 1), POLYGON_CHUNK):
        gdf = pyogrio.read_dataframe(raw, layer=LOSS_LAYER, skip_features=start, max_features=POLYGON_CHUNK) \
            if vres.features else None
        if gdf is None or gdf.empty:
            gdf = gpd.GeoDataFrame({"id": np.zeros(0, np.int64), "area_m2": np.zeros(0)},
                                   geometry=gpd.GeoSeries([], crs=crs))
        small = gdf["area_m2"].to_numpy(dtype=float) < min_m2
        dropped += int(small.sum())
        gdf = gdf.loc[~small]
        geoms = gdf.geometry.to_numpy()
        n_pixels = np.rint(shapely.area(shapely.transform(geoms, to_pixels))).astype(np.int64) if len(geoms) \
            else np.zeros(0, np.int64)
        cent = shapely.centroid(geoms) if len(geoms) else np.zeros(0, dtype=object)
        lon, lat = to_wgs84.transform(shapely.get_x(cent), shapely.get_y(cent)) if len(geoms) \
            else (np.zeros(0), np.zeros(0))
        out = gpd.GeoDataFrame(
            {
                "id": gdf["id"].to_numpy(dtype=np.int64),
                "area_ha": np.round(gdf["area_m2"].to_numpy(dtype=float) / 1e4, 6),
                "area_m2": np.round(gdf["area_m2"].to_numpy(dtype=float), 3),
                "n_pixels": n_pixels,
                "perimeter_m": np.round(gdf["perimeter_m"].to_numpy(dtype=float), 3) if "perimeter_m" in gdf
                else np.zeros(len(gdf)),
                "centroid_lon": np.round(np.asarray(lon, dtype=float), 7),
                "centroid_lat": np.round(np.asarray(lat, dtype=float), 7),
            },
            geometry=gpd.GeoSeries(geoms, crs=crs),
        )
        if len(out) or not written:
            pyogrio.write_dataframe(out, final_tmp, layer=LOSS_LAYER, driver="GPKG", geometry_type="MultiPolygon",
                                    append=written, dataset_options=None if written else GPKG_DATASET_OPTIONS)
            written = True
        kept += len(out)
        kept_ha += float(out["area_m2"].sum()) / 1e4
    return kept, kept_ha, dropped


# -- the API -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeCounts:
    no_change: int
    loss: int
    gain: int
    unobserved: int

    @property
    def observed(self) -> int:
        return self.no_change + self.loss + self.gain


@dataclass(frozen=True)
class ChangeResult:
    out_dir: str
    change: str  # change.tif
    loss_polygons: str  # loss.gpkg (layer "loss")
    record: str  # change.json
    pixels: ChangeCounts
    pixel_area_m2: float
    loss_ha: float  # every loss pixel of the raster
    gain_ha: float
    loss_polygon_count: int  # after the minimum mapping unit
    loss_polygon_ha: float
    dropped_polygons: int  # loss patches under the minimum mapping unit
    min_area_ha: float
    mode: str
    aligned: bool
    run_id: str
    seconds: float


def _default_workers() -> int:
    from geoseg._util.execution import default_workers

    return default_workers()


def _check_single_band(info, role: str, mode: str) -> None:
    if info.count != 1 and mode == "classes":
        raise InputError(
            f"{role} raster {info.path} has {info.count} bands; give a single-band class raster (e.g. the "
            "landcover.tif of geoseg predict), or pass --probability for probabilities.tif"
        )


def _probability_band(info, items: Sequence[str | int], role: str) -> int:
    if info.count == 1:
        return 1
    names = [str(i) for i in items if isinstance(i, str)]
    descs = [(d or "").strip().casefold() for d in info.descriptions]
    if len(items) == 1 and names and names[0].casefold() in descs:
        return descs.index(names[0].casefold()) + 1
    have = ", ".join(d or "?" for d in info.descriptions)
    raise InputError(
        f"{role} raster {info.path} has {info.count} bands ({have}) and none is named by --forest "
        f"{','.join(map(str, items))}; name the forest band with --forest (e.g. --forest trees), "
        "or give a single-band probability raster"
    )


def detect_change(
    before: str | os.PathLike,
    after: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    forest: str | int | Sequence[str | int] | None = "trees",
    probability: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    before_mask: str | os.PathLike | None = None,
    after_mask: str | os.PathLike | None = None,
    align: bool = False,
    min_area: str | float | None = None,
    preset: str | None = None,
    connectivity: int = 4,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int | None = None,
    scheduler: str = "threads",
    overwrite: bool = False,
    progress: bool | None = None,
) -> ChangeResult:
    """Forest loss/gain from BEFORE to AFTER into ``out_dir``: change.tif, loss.gpkg, change.json.

    ``forest``: forest class names (resolved per raster from ``CLASS_<value>`` band tags) or
    values (default ``trees``); with ``probability=True`` the rasters hold forest probability
    (uint8 percent as geoseg writes, or float 0..1; a multi-band probabilities.tif is read at
    the band named by ``forest``) and forest means ``>= threshold`` percent.  Masks: nonzero =
    valid (clear).  ``align``: resample AFTER (and the masks) onto BEFORE's grid when the
    grids differ (nearest; bilinear for probabilities), else such a mismatch is an error.
    ``min_area``: hectares, or a string with a unit (``'0.3ha'``); ``preset='prodes'``: 6.25 ha.
    """
    from geoseg._util.execution import Execution, check_scheduler, run_each
    from geoseg._util.progress import make_progress
    from geoseg._version import __version__
    from geoseg.io.output import (
        Product,
        build_cog,
        check_output_dir,
        create_part,
        discard,
        new_run_id,
        product_paths,
        remove_with_sidecars,
    )

    t0 = time.perf_counter()
    mode = "probability" if probability else "classes"
    min_area_ha = parse_min_area(min_area, preset)
    if connectivity not in (4, 8):
        raise ParameterError(f"connectivity {connectivity} must be 4 or 8")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ParameterError(f"--threshold {threshold!r} must be a number of percent, e.g. 50") from None
    if probability and not (0.0 < threshold <= 100.0):
        raise ParameterError(f"--threshold {threshold:g} must be a percentage in (0, 100], e.g. 50")
    if int(block_size) < 1:
        raise ParameterError(f"block size {block_size} must be a positive number of pixels, e.g. 1024")
    block_size = align_up(int(block_size), BLOCK_ALIGN)
    scheduler = check_scheduler(scheduler)
    n_workers = _default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise ParameterError(f"--workers {workers} must be >= 1")
    items = _forest_items(forest)

    b_info, b_names, b_scales = _inspect(before, "BEFORE")
    a_info, a_names, a_scales = _inspect(after, "AFTER")
    masks = []
    for role, path in (("--before-mask", before_mask), ("--after-mask", after_mask)):
        masks.append(_inspect(path, role)[0] if path is not None else None)

    resampling = "bilinear" if probability else "nearest"
    b_band = a_band = 1
    before_forest: tuple[int, ...] = ()
    after_forest: tuple[int, ...] = ()
    for info, role in ((b_info, "BEFORE"), (a_info, "AFTER")):
        _check_single_band(info, role, mode)
        if not probability and not np.issubdtype(np.dtype(info.dtype), np.integer):
            raise InputError(
                f"{role} raster {info.path} holds {info.dtype} values, not class codes; pass --probability for "
                "forest-probability rasters, or give land-cover class rasters"
            )
    if probability:
        b_band = _probability_band(b_info, items, "BEFORE")
        a_band = _probability_band(a_info, items, "AFTER")
    else:
        before_forest = resolve_forest_values(items, b_names, b_info.path)
        after_forest = resolve_forest_values(items, a_names, a_info.path)
    for m, role in zip(masks, ("--before-mask", "--after-mask")):
        if m is not None and m.count != 1:
            raise InputError(f"{role} {m.path} has {m.count} bands; give a single-band mask (nonzero = valid)")

    def scale_of(info, scales, band) -> float:
        s = scales[band - 1]
        if s != 1.0:
            return s
        return 1.0 if np.issubdtype(np.dtype(info.dtype), np.floating) else 0.01  # integers: percent

    aligned = False
    others = [("AFTER", a_info, a_band, resampling)] + [
        (role, m, 1, "nearest") for m, role in zip(masks, ("--before-mask", "--after-mask")) if m is not None]
    layers: dict[str, Layer] = {}
    for role, info, band, rs in others:
        diffs = grid_differences(b_info, info)
        if diffs and not align:
            raise GridMismatchError(
                f"{role} {info.path} is not on BEFORE's grid ({'; '.join(diffs)}); pass --align to resample it "
                f"onto BEFORE's grid ({rs}), or give rasters on one grid"
            )
        aligned |= bool(diffs)
        layers[role] = _layer(info, band, warp=bool(diffs), resampling=rs)

    out = Path(out_dir)
    check_output_dir(out, OUTPUT_NAMES, overwrite)
    run_id = new_run_id()
    final, part, cog = product_paths(str(out), "change", run_id)
    names = {f"CLASS_{v}": n for v, (n, _) in CHANGE_CLASSES.items()}
    cmap = {i: (0, 0, 0, 0) for i in range(256)}
    cmap.update({v: rgba for v, (_, rgba) in CHANGE_CLASSES.items()})
    forest_desc = (f">= {threshold:g}% forest probability" if probability else
                   f"classes {','.join(map(str, before_forest))} (before), {','.join(map(str, after_forest))} (after)")
    product = Product(
        name="change", final=final, part=part, cog=cog, count=1, descriptions=("forest change",),
        overview_resampling="MODE", colormap=cmap,
        tags={"GEOSEG_PRODUCT": "change", "GEOSEG_BEFORE": os.path.abspath(b_info.path),
              "GEOSEG_AFTER": os.path.abspath(a_info.path), "GEOSEG_FOREST": forest_desc},
        band_tags=({**names, "CLASS_VALUES": ",".join(str(v) for v in CHANGE_CLASSES),
                    "CLASS_NAMES": ",".join(n for n, _ in CHANGE_CLASSES.values()),
                    "NODATA_MEANING": "unobserved: nodata or masked in either date"},),
    )
    spec = ChangeSpec(
        mode=mode, before=_layer(b_info, b_band), after=layers["AFTER"],
        before_mask=layers.get("--before-mask"), after_mask=layers.get("--after-mask"),
        before_forest=before_forest, after_forest=after_forest, threshold=threshold,
        before_scale=scale_of(b_info, b_scales, b_band), after_scale=scale_of(a_info, a_scales, a_band),
        crs_wkt=b_info.crs_wkt, transform=b_info.transform, width=b_info.width, height=b_info.height,
        part=part,
    )
    windows = plan_windows(b_info.height, b_info.width, block_size)
    work = out / f".change.{run_id}.work"
    loss_tmp = out / f".loss.{run_id}.part.gpkg"
    record_tmp = out / f".change.{run_id}.json.tmp"
    bar = make_progress(len(windows), "blocks", progress)
    try:
        create_part(product, b_info)
        try:
            hist = np.zeros(4, dtype=np.int64)
            for h in run_each(change_window_task, windows, "change-window", spec,
                              Execution(scheduler, n_workers), bar):
                hist += h
        finally:
            bar.close()
        counts = ChangeCounts(*(int(x) for x in hist))
        if counts.observed == 0:
            raise EmptySceneError(
                f"no pixel is observed in both {b_info.path} and {a_info.path} (nodata, masks or no overlap); "
                "check the inputs, their nodata values and the masks"
            )
        build_cog(product)
        work.mkdir()
        vec_scheduler = scheduler if scheduler in ("threads", "processes", "synchronous") else "threads"
        n_poly, poly_ha, dropped = _loss_polygons(
            product.cog, work, loss_tmp, min_area_ha=min_area_ha, connectivity=connectivity,
            transform=b_info.transform, crs_wkt=b_info.crs_wkt, workers=n_workers, scheduler=vec_scheduler,
            block_size=max(block_size, 2048))
        pix_m2 = pixel_area_m2(b_info.crs_wkt, b_info.transform, b_info.width, b_info.height)
        seconds = time.perf_counter() - t0
        record = {
            "geoseg_version": __version__,
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "before": os.path.abspath(b_info.path),
            "after": os.path.abspath(a_info.path),
            "before_acquired": b_info.acquired,  # from the inputs' tags (geoseg predict writes them), else None
            "after_acquired": a_info.acquired,
            "before_mask": layers["--before-mask"].path if "--before-mask" in layers else None,
            "after_mask": layers["--after-mask"].path if "--after-mask" in layers else None,
            "mode": mode,
            "forest": {"items": [str(i) for i in items], "before_values": list(before_forest),
                       "after_values": list(after_forest), "threshold_percent": threshold if probability else None},
            "aligned": aligned,
            "codes": {str(v): n for v, (n, _) in CHANGE_CLASSES.items()} | {"255": "unobserved"},
            "pixels": {"no_change": counts.no_change, "forest_loss": counts.loss, "forest_gain": counts.gain,
                       "unobserved": counts.unobserved},
            "pixel_area_m2": pix_m2,
            "loss_ha": counts.loss * pix_m2 / 1e4,
            "gain_ha": counts.gain * pix_m2 / 1e4,
            "min_area_ha": min_area_ha,
            "connectivity": connectivity,
            "loss_polygons": n_poly,
            "loss_polygon_ha": poly_ha,
            "dropped_polygons": dropped,
            "outputs": {"change": "change.tif", "loss": "loss.gpkg"},
            "seconds": round(seconds, 3),
        }
        record_tmp.write_text(json.dumps(record, indent=2) + "\n")
        from geoseg.delivery.style import LOSS_CATEGORY, atomic_write_text, embed_gpkg_style, raster_qml

        embed_gpkg_style(loss_tmp, LOSS_LAYER, [LOSS_CATEGORY], field=None, style_name="forest loss",
                         description="geoseg forest loss")
        atomic_write_text(out / "change.qml", raster_qml(change_class_info(), nodata=UNOBSERVED))
        os.replace(product.cog, final)
        os.replace(loss_tmp, out / "loss.gpkg")
        os.replace(record_tmp, out / "change.json")
    except BaseException:
        discard([product])
        remove_with_sidecars(loss_tmp, record_tmp)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # delivery sidecars, after the products are in place: side-by-side quicklook, then the report
    from geoseg.delivery.quicklook import write_change_quicklook
    from geoseg.delivery.report import write_change_report

    if probability:
        bs, as_ = spec.before_scale, spec.after_scale
        b_fn = lambda d: d.astype(np.float64) * bs >= threshold / 100.0 - 1e-9  # noqa: E731
        a_fn = lambda d: d.astype(np.float64) * as_ >= threshold / 100.0 - 1e-9  # noqa: E731
    else:
        b_fn = lambda d: np.isin(d, before_forest)  # noqa: E731
        a_fn = lambda d: np.isin(d, after_forest)  # noqa: E731
    write_change_quicklook(final, b_info.path, a_info.path, out / "change_quicklook.png",
                           before_forest=b_fn, after_forest=a_fn, before_band=b_band, after_band=a_band,
                           change_classes=change_class_info(),
                           class_pixels={"no_change": counts.no_change, "forest_loss": counts.loss,
                                         "forest_gain": counts.gain}, pixel_area_m2=pix_m2)
    from geoseg.delivery.stac import ITEM_NAME, write_change_item

    write_change_report(out, pending=(ITEM_NAME,))
    write_change_item(out)  # last: it records the checksums of every other file
    return ChangeResult(
        out_dir=str(out), change=final, loss_polygons=str(out / "loss.gpkg"), record=str(out / "change.json"),
        pixels=counts, pixel_area_m2=pix_m2, loss_ha=record["loss_ha"], gain_ha=record["gain_ha"],
        loss_polygon_count=n_poly, loss_polygon_ha=poly_ha, dropped_polygons=dropped, min_area_ha=min_area_ha,
        mode=mode, aligned=aligned, run_id=run_id, seconds=seconds,
    )
