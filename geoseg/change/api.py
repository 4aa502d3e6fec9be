"""``detect_change``: forest loss/gain between two dates, the Python API behind ``geoseg change``.

Two land-cover class rasters (forest = some class values) or two forest-probability rasters
(forest = probability >= threshold) are compared pixel by pixel on the BEFORE raster's grid::

    0    no change        observed in both dates, forest both times or non-forest both times
    1    forest loss      forest before, not forest after
    2    forest gain      not forest before, forest after
    255  unobserved       nodata / masked (clouds) in either date, or outside AFTER's footprint

Unobserved is *not* "no change".  The work is one dask task per window of the BEFORE grid
(:func:`geoseg._util.execution.run_each`: threads, processes or ``tcp://``): each task reads both dates (the
AFTER raster and the masks warped onto the BEFORE grid through a rasterio ``WarpedVRT`` when
``align``), classifies, and streams its block into the temporary change GeoTIFF
(:mod:`geoseg.io.output`), so memory is bounded by the windows in flight.

The rooms: :mod:`~geoseg.change.classify` (per-pixel codes, what is forest), :mod:`~geoseg.change.inputs`
(the inputs checked before any work), :mod:`~geoseg.change.tasks` (the window task),
:mod:`~geoseg.change.polygons` (loss polygons with the minimum mapping unit) and this module (the run).

Outputs are written to temporary names and renamed into place only when everything succeeded
(:class:`geoseg.io.run.RunFolder`): ``change.tif`` (COG), ``loss.gpkg`` (with a single-symbol default style
in its ``layer_styles``), ``change.json``.  Then the delivery sidecars: ``change.qml`` (QGIS paletted
style), ``change_quicklook.png`` (before / after / change), ``report.html`` and, last (it records every
other file's checksum), the STAC Item ``item.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._util.execution import Execution, check_execution
from geoseg.change.classify import classify_change, forest_items
from geoseg.change.classify import resolve_forest_values as resolve_forest_values  # re-exported (monitoring)
from geoseg.change.inputs import ChangeInputs, plan_inputs
from geoseg.change.polygons import DEFAULT_MIN_AREA_HA as DEFAULT_MIN_AREA_HA  # re-exported
from geoseg.change.polygons import LOSS_LAYER, PRESETS, loss_polygons, parse_min_area
from geoseg.change.polygons import POLYGON_CHUNK as POLYGON_CHUNK  # re-exported
from geoseg.change.tasks import ChangeSpec, change_block, change_window_task
from geoseg.change.tasks import Layer as Layer  # re-exported
from geoseg.errors import EmptySceneError, ParameterError
from geoseg.io.codes import CHANGE_CLASSES, UNOBSERVED, ClassInfo
from geoseg.io.grid import BlockGrid, check_block_size
from geoseg.io.output import Product

__all__ = ["detect_change", "ChangeResult", "ChangeSpec", "ChangeCounts", "PRESETS", "CHANGE_CLASSES",
           "parse_min_area", "change_block", "classify_change"]

DEFAULT_THRESHOLD = 50.0
DEFAULT_BLOCK_SIZE = 1024
OUTPUT_NAMES = ("change.tif", "loss.gpkg", "change.json", "change.qml", "change_quicklook.png", "report.html",
                "item.json")


def change_class_info() -> list[ClassInfo]:
    """The change classes as :class:`~geoseg.io.codes.ClassInfo` (for styles and quicklooks)."""
    return [ClassInfo(v, n, "#{:02X}{:02X}{:02X}".format(*rgba[:3])) for v, (n, rgba) in CHANGE_CLASSES.items()]


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


# -- validate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    min_area_ha: float
    connectivity: int
    threshold: float
    block_size: int
    execution: Execution
    items: list[str | int]


def _check_options(*, min_area: str | float | None, preset: str | None, connectivity: int, threshold: Any,
                   probability: bool, block_size: int, scheduler: str, workers: int | None,
                   forest: str | int | Sequence[str | int] | None) -> _Options:
    """Every option checked, in the order the user reads them, before any input is opened."""
    min_area_ha = parse_min_area(min_area, preset)
    if connectivity not in (4, 8):
        raise ParameterError(f"connectivity {connectivity} must be 4 or 8")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ParameterError(f"--threshold {threshold!r} must be a number of percent, e.g. 50") from None
    if probability and not (0.0 < threshold <= 100.0):
        raise ParameterError(f"--threshold {threshold:g} must be a percentage in (0, 100], e.g. 50")
    block_size = check_block_size(block_size)  # the change raster is written in blocks: a multiple of 256
    execution = check_execution(scheduler, workers)
    return _Options(min_area_ha, connectivity, threshold, block_size, execution, forest_items(forest))


# -- execute -----------------------------------------------------------------------------------------


def _change_product(out: Path, run_id: str, inputs: ChangeInputs) -> Product:
    """The change raster: uint8 codes with the change colour table and class tags."""
    from geoseg.io.output import product_paths

    final, part, cog = product_paths(str(out), "change", run_id)
    names = {f"CLASS_{v}": n for v, (n, _) in CHANGE_CLASSES.items()}
    cmap = dict.fromkeys(range(256), (0, 0, 0, 0))
    cmap.update({v: rgba for v, (_, rgba) in CHANGE_CLASSES.items()})
    return Product(
        name="change", final=final, part=part, cog=cog, count=1, descriptions=("forest change",),
        overview_resampling="MODE", colormap=cmap,
        tags={"GEOSEG_PRODUCT": "change", "GEOSEG_BEFORE": os.path.abspath(inputs.before.path),
              "GEOSEG_AFTER": os.path.abspath(inputs.after.path), "GEOSEG_FOREST": inputs.forest_description()},
        band_tags=({**names, "CLASS_VALUES": ",".join(str(v) for v in CHANGE_CLASSES),
                    "CLASS_NAMES": ",".join(n for n, _ in CHANGE_CLASSES.values()),
                    "NODATA_MEANING": "unobserved: nodata or masked in either date"},),
    )


def _count_change(inputs: ChangeInputs, product: Product, block_size: int, execution: Execution,
                  progress: bool | None) -> ChangeCounts:
    """Run one task per block into the product's temporary GeoTIFF; the pixels of each change code."""
    from geoseg._util.execution import run_each
    from geoseg._util.progress import make_progress
    from geoseg.io.output import create_part

    b = inputs.before
    windows = BlockGrid(b.height, b.width, block_size).windows()
    bar = make_progress(len(windows), "blocks", progress)
    create_part(product, b)
    try:
        hist = np.zeros(4, dtype=np.int64)
        for h in run_each(change_window_task, windows, "change-window", inputs.spec(product.part), execution, bar):
            hist += h
    finally:
        bar.close()
    counts = ChangeCounts(*(int(x) for x in hist))
    if counts.observed == 0:
        raise EmptySceneError(
            f"no pixel is observed in both {b.path} and {inputs.after.path} (nodata, masks or no overlap); "
            "check the inputs, their nodata values and the masks"
        )
    return counts


def _polygons(cog: str, work: Path, loss_tmp: Path, inputs: ChangeInputs, opts: _Options) -> tuple[int, float, int]:
    """The loss polygons of the finished change COG into ``loss_tmp``, styled for QGIS."""
    from geoseg.delivery.style import LOSS_CATEGORY, embed_gpkg_style

    scheduler = opts.execution.scheduler
    polygons = loss_polygons(
        cog, work, loss_tmp, min_area_ha=opts.min_area_ha, connectivity=opts.connectivity,
        transform=inputs.before.transform, crs_wkt=inputs.crs_wkt, workers=opts.execution.workers,
        scheduler=scheduler if scheduler in ("threads", "processes", "synchronous") else "threads",
        block_size=max(opts.block_size, 2048))
    embed_gpkg_style(loss_tmp, LOSS_LAYER, [LOSS_CATEGORY], field=None, style_name="forest loss",
                     description="geoseg forest loss")
    return polygons


# -- record and sidecars -----------------------------------------------------------------------------


def _record(run_id: str, inputs: ChangeInputs, opts: _Options, counts: ChangeCounts,
            polygons: tuple[int, float, int], seconds: float) -> dict[str, Any]:
    """change.json (these keys in this order: the report and the STAC Item read it)."""
    from geoseg._version import __version__

    n_poly, poly_ha, dropped = polygons
    pix_m2 = inputs.pixel_area_m2
    return {
        "geoseg_version": __version__,
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "before": os.path.abspath(inputs.before.path),
        "after": os.path.abspath(inputs.after.path),
        "before_acquired": inputs.before.acquired,  # from the inputs' tags (geoseg predict writes them), else None
        "after_acquired": inputs.after.acquired,
        "before_mask": inputs.mask_path("--before-mask"),
        "after_mask": inputs.mask_path("--after-mask"),
        "mode": inputs.mode,
        "forest": {"items": [str(i) for i in opts.items], "before_values": list(inputs.before_forest),
                   "after_values": list(inputs.after_forest),
                   "threshold_percent": opts.threshold if inputs.probability else None},
        "aligned": inputs.aligned,
        "codes": {str(v): n for v, (n, _) in CHANGE_CLASSES.items()} | {"255": "unobserved"},
        "pixels": {"no_change": counts.no_change, "forest_loss": counts.loss, "forest_gain": counts.gain,
                   "unobserved": counts.unobserved},
        "pixel_area_m2": pix_m2,
        "loss_ha": counts.loss * pix_m2 / 1e4,
        "gain_ha": counts.gain * pix_m2 / 1e4,
        "min_area_ha": opts.min_area_ha,
        "connectivity": opts.connectivity,
        "loss_polygons": n_poly,
        "loss_polygon_ha": poly_ha,
        "dropped_polygons": dropped,
        "outputs": {"change": "change.tif", "loss": "loss.gpkg"},
        "seconds": round(seconds, 3),
    }


def _write_sidecars(out: Path, change: str, inputs: ChangeInputs, counts: ChangeCounts) -> None:
    """After the products are in place: the QGIS style, the side-by-side quicklook, the report and, last
    (it records the checksums of every other file), the STAC Item."""
    from geoseg._util.atomic import atomic_write_text
    from geoseg.delivery.quicklook import write_change_quicklook
    from geoseg.delivery.report import write_change_report
    from geoseg.delivery.stac import ITEM_NAME, write_change_item
    from geoseg.delivery.style import raster_qml

    atomic_write_text(out / "change.qml", raster_qml(change_class_info(), nodata=UNOBSERVED))
    b_rule, a_rule = inputs.forest_rules()
    write_change_quicklook(change, inputs.before.path, inputs.after.path, out / "change_quicklook.png",
                           before_forest=b_rule, after_forest=a_rule, before_band=inputs.layers["BEFORE"].band,
                           after_band=inputs.layers["AFTER"].band, change_classes=change_class_info(),
                           class_pixels={"no_change": counts.no_change, "forest_loss": counts.loss,
                                         "forest_gain": counts.gain}, pixel_area_m2=inputs.pixel_area_m2)
    write_change_report(out, pending=(ITEM_NAME,))
    write_change_item(out)


# -- the API -----------------------------------------------------------------------------------------


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
    ``block_size``: pixels per task, a multiple of 256 (the change raster's tile).
    """
    from geoseg.io.output import build_cog, discard
    from geoseg.io.run import RunFolder

    t0 = time.perf_counter()
    opts = _check_options(min_area=min_area, preset=preset, connectivity=connectivity, threshold=threshold,
                          probability=probability, block_size=block_size, scheduler=scheduler, workers=workers,
                          forest=forest)
    inputs = plan_inputs(before, after, (before_mask, after_mask), items=opts.items, probability=probability,
                         threshold=opts.threshold, align=align)
    out = Path(out_dir)
    with RunFolder(out, OUTPUT_NAMES, overwrite, lock=False) as run:  # change never locked its folder
        product = _change_product(out, run.run_id, inputs)
        run.on_failure(lambda: discard([product]))
        run.stage(product.cog, product.final)  # staged first: published in this order
        loss_tmp = run.temp("loss.gpkg")
        record_tmp = run.temp("change.json")
        counts = _count_change(inputs, product, opts.block_size, opts.execution, progress)
        build_cog(product)
        work = run.work_dir("change")
        work.mkdir()
        polygons = _polygons(product.cog, work, loss_tmp, inputs, opts)
        seconds = time.perf_counter() - t0
        record = _record(run.run_id, inputs, opts, counts, polygons, seconds)
        record_tmp.write_text(json.dumps(record, indent=2) + "\n")
        run.publish()
        _write_sidecars(out, product.final, inputs, counts)
    return ChangeResult(
        out_dir=str(out), change=product.final, loss_polygons=str(out / "loss.gpkg"),
        record=str(out / "change.json"), pixels=counts, pixel_area_m2=inputs.pixel_area_m2,
        loss_ha=record["loss_ha"], gain_ha=record["gain_ha"], loss_polygon_count=polygons[0],
        loss_polygon_ha=polygons[1], dropped_polygons=polygons[2], min_area_ha=opts.min_area_ha, mode=inputs.mode,
        aligned=inputs.aligned, run_id=run.run_id, seconds=seconds,
    )
