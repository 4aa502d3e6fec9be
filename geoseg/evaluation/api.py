"""``evaluate_rasters`` / ``evaluate_model``: the Python API behind ``geoseg evaluate``.

A prediction raster is compared with a truth raster window by window: every
window is one dask task (:mod:`geoseg.evaluation.tasks`) that reads both rasters (by path), and
returns a small :class:`~geoseg.evaluation.metrics.ConfusionMatrix`; the matrices are summed and the
metrics computed once (:mod:`geoseg.evaluation.metrics` documents every definition).  Memory is
bounded by the windows in flight, never by the raster size.

The rasters must share a grid (CRS, geotransform, size).  With ``align=True`` the
truth is instead resampled with nearest neighbour onto the prediction's grid,
window by window, through a rasterio ``WarpedVRT``; prediction pixels the truth
does not cover count as truth nodata.

Excluded pixels: nodata (or masked) pixels of either raster, and pixels whose
*truth* value is in ``ignore``.

Class names come from, in order: the ``classes`` argument (a model package, a
``{value: name}`` mapping or ``ClassInfo`` list), the prediction's band tags
``CLASS_<value>`` (written by ``geoseg predict``), the truth's band tags.  Declared
classes absent from both rasters are listed with NaN metrics.

:func:`evaluate_model` reads its data set with :mod:`geoseg.evaluation.data`;
:func:`write_confusion_png` and :func:`write_json` (:mod:`geoseg.evaluation.outputs`) write atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._util.execution import Execution, check_execution
from geoseg.errors import EmptySceneError, InputError, InputFileError, ParameterError
from geoseg.errors import GridMismatchError as GridMismatchError  # re-exported: tests import it here
from geoseg.evaluation.data import PREDICT_OPTIONS as PREDICT_OPTIONS  # re-exported
from geoseg.evaluation.data import load_data_config
from geoseg.evaluation.metrics import compute_metrics
from geoseg.evaluation.outputs import check_output_files as check_output_files  # re-exported (the CLI)
from geoseg.evaluation.outputs import write_confusion_png as write_confusion_png  # re-exported
from geoseg.evaluation.outputs import write_json as write_json  # re-exported
from geoseg.evaluation.result import Evaluation, InputSummary
from geoseg.evaluation.tasks import PairSpec, WindowCounts, run_windows
from geoseg.evaluation.tasks import window_counts as window_counts  # re-exported
from geoseg.io.grid import BlockGrid, check_block_size
from geoseg.io.raster import ClassRaster, class_names_from_tags, grid_differences

DEFAULT_BLOCK_SIZE = 1024


# -- inputs -------------------------------------------------------------------------------------------


def open_evaluated_raster(path: str | os.PathLike, role: str, allow_ungeoreferenced: bool = False) -> ClassRaster:
    """Inspect a class raster; one-line InputError when missing, unreadable, multi-band or not integer."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from geoseg.io.raster import open_scene

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"{role} raster {path} does not exist; check the path")
    info = open_scene(path, allow_ungeoreferenced=allow_ungeoreferenced)
    if info.count != 1:
        raise InputError(
            f"{role} raster {path} has {info.count} bands; give a single-band class raster "
            "(e.g. the landcover.tif of 'geoseg predict', not probabilities.tif)"
        )
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise InputError(
            f"{role} raster {path} holds {info.dtype} values, not integer class codes; convert it "
            "(e.g. gdal_translate -ot Byte) or give the class raster"
        )
    try:
        with rasterio.open(path) as src:
            tags = src.tags(1)
    except RasterioIOError:  # pragma: no cover - open_scene just read it
        raise InputFileError(f"{path} is not a readable raster") from None
    return ClassRaster(
        path=info.path, width=info.width, height=info.height, dtype=info.dtype, crs_wkt=info.crs_wkt,
        transform=info.transform, nodata=info.nodata, masked=info.per_dataset_mask,
        class_names=class_names_from_tags(tags),
    )


def resolve_classes(classes: Any) -> dict[int, str]:
    """``classes`` as ``{value: name}``: a mapping, a ``ClassInfo`` sequence, or a model reference."""
    if classes is None:
        return {}
    if isinstance(classes, Mapping):
        return {int(k): str(v) for k, v in classes.items()}
    if isinstance(classes, (str, os.PathLike)):
        from geoseg.model.package import read_card

        return {c.value: c.name for c in read_card(classes).classes}
    try:
        return {int(c.value): str(c.name) for c in classes}
    except (AttributeError, TypeError):
        raise ParameterError(
            "classes must be a {value: name} mapping, a list of ClassInfo, or a model package path"
        ) from None


# -- results ------------------------------------------------------------------------------------------


# -- evaluation of a raster pair ---------------------------------------------------------------------


def _ignore_tuple(ignore: int | Iterable[int] | None) -> tuple[int, ...]:
    if ignore is None:
        return ()
    if isinstance(ignore, (int, np.integer)):
        return (int(ignore),)
    try:
        return tuple(sorted({int(v) for v in ignore}))
    except (TypeError, ValueError):
        raise ParameterError(f"ignore values must be integers, got {ignore!r}; e.g. --ignore 0") from None


def _names_and_declared(explicit: dict[int, str], rasters: Sequence[ClassRaster], ignore: Sequence[int],
                        ) -> tuple[dict[int, str], set[int], list[str]]:
    """Class names, declared class values and warnings about conflicting class tags."""
    warnings = []
    if explicit:
        names, declared = dict(explicit), set(explicit)
    else:
        names, declared = {}, set()
        for r in rasters:
            for v, n in r.class_names.items():
                if v in names and names[v].casefold() != n.casefold():
                    warnings.append(
                        f"class {v} is {names[v]!r} in the prediction but {n!r} in {r.path}; "
                        "the class schemes may differ (names from the prediction are used)"
                    )
                names.setdefault(v, n)
                declared.add(v)
    return names, declared - set(ignore), warnings


def _check_pair(pred: ClassRaster, truth: ClassRaster, align: bool) -> None:
    if align:
        if not (pred.georeferenced and truth.georeferenced):
            raise ParameterError("--align needs georeferenced prediction and truth rasters (CRS and geotransform)")
        return
    diffs = grid_differences(pred, truth)
    if diffs:
        raise GridMismatchError(
            f"{truth.path} is not on the grid of {pred.path} ({'; '.join(diffs)}); pass --align to resample "
            "the truth onto the prediction grid (nearest neighbour), or reproject it first"
        )


def _pair_counts(pred: ClassRaster, truth: ClassRaster, align: bool, ignore: tuple[int, ...], block_size: int,
                 execution: Execution, progress: bool | None) -> tuple[WindowCounts, int]:
    from geoseg._util.progress import make_progress

    _check_pair(pred, truth, align)
    spec = PairSpec(
        pred_path=os.path.abspath(pred.path), truth_path=os.path.abspath(truth.path), pred_masked=pred.masked,
        truth_masked=truth.masked, truth_nodata=truth.nodata, align=align, crs_wkt=pred.crs_wkt,
        transform=pred.transform, width=pred.width, height=pred.height, ignore=ignore,
    )
    windows = BlockGrid(pred.height, pred.width, block_size).windows()
    bar = make_progress(len(windows), "windows", progress)
    try:
        counts = run_windows(spec, windows, execution, bar)
    finally:
        bar.close()
    return counts, len(windows)


def _no_pixels(what: str) -> EmptySceneError:
    return EmptySceneError(
        f"no pixel left to evaluate in {what}: every pixel is nodata in one of the rasters, ignored, or "
        "outside the truth; check the nodata values, --ignore, and that the rasters overlap"
    )


def evaluate_rasters(
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    classes: Any = None,
    ignore: int | Iterable[int] | None = None,
    align: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int | None = None,
    scheduler: str = "threads",
    allow_ungeoreferenced: bool = False,
    progress: bool | None = False,
) -> Evaluation:
    """Compare the class raster ``pred`` with the reference ``truth``; see the module docstring.

    ``ignore``: truth value(s) to leave out.  ``classes``: class names and the declared class list
    (a model package path/name, ``{value: name}``, or ``ClassInfo`` list); default: the rasters' tags.
    """
    t0 = time.perf_counter()
    block_size = check_block_size(block_size, align=1)  # evaluate only reads: any positive size
    execution = check_execution(scheduler, workers)
    ign = _ignore_tuple(ignore)
    explicit = resolve_classes(classes)
    p = open_evaluated_raster(pred, "prediction", allow_ungeoreferenced)
    t = open_evaluated_raster(truth, "truth", allow_ungeoreferenced)
    counts, _ = _pair_counts(p, t, align, ign, block_size, execution, progress)
    if counts.confusion.total == 0:
        raise _no_pixels(f"{p.path} vs {t.path}")
    names, declared, warnings = _names_and_declared(explicit, [p, t], ign)
    m = compute_metrics(counts.confusion, names, declared)
    summary = InputSummary(p.path, t.path, m.pixels, counts.nodata, counts.ignored, m.pixel_accuracy, m.miou)
    return Evaluation(m, (summary,), align, ign, time.perf_counter() - t0, warnings=tuple(warnings))


# -- evaluation of a model on a data set --------------------------------------------------------------


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike | Sequence[Mapping[str, str]],
    *,
    ignore: int | Iterable[int] | None = None,
    align: bool | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int | None = None,
    scheduler: str = "threads",
    device: str | None = None,
    progress: bool | None = False,
) -> Evaluation:
    """Predict every image of ``data`` with ``model`` (into a temporary folder) and evaluate against its label.

    ``data`` is a YAML config path (``images: [{image, label}]``, optional ``ignore``, ``align``
    and ``predict`` options) or a list of ``{image, label}`` dicts.  Confusion matrices of all
    images are summed, so the metrics weigh every labelled pixel equally.  ``ignore``/``align``
    given here override the config's; class names come from the model card.
    """
    from geoseg.model.package import read_card, resolve
    from geoseg.predict.api import predict_scene

    t0 = time.perf_counter()
    if isinstance(data, (str, os.PathLike)):
        cfg = load_data_config(data)
    else:
        cfg = {"images": [{"image": os.fspath(d["image"]), "label": os.fspath(d["label"])} for d in data],
               "ignore": None, "align": False, "predict": {}}
    block_size = check_block_size(block_size, align=1)  # evaluate only reads: any positive size
    execution = check_execution(scheduler, workers)
    ign = _ignore_tuple(cfg["ignore"] if ignore is None else ignore)
    do_align = cfg["align"] if align is None else bool(align)
    model_path = resolve(model)
    card = read_card(model_path)
    names = {c.value: c.name for c in card.classes}
    labels = [open_evaluated_raster(it["label"], "label") for it in cfg["images"]]  # fail before any prediction
    popts = dict(cfg["predict"])
    if device is not None:
        popts["device"] = device
    total = WindowCounts.empty()
    summaries = []
    with tempfile.TemporaryDirectory(prefix="geoseg-evaluate-") as tmp:
        for i, (item, label) in enumerate(zip(cfg["images"], labels)):
            res = predict_scene(item["image"], model_path, Path(tmp) / str(i), workers=execution.workers,
                                scheduler=execution.scheduler, progress=progress, **popts)
            pred = open_evaluated_raster(res.landcover, "prediction")
            counts, _ = _pair_counts(pred, label, do_align, ign, block_size, execution, False)
            m = compute_metrics(counts.confusion, names, set(names) - set(ign))
            summaries.append(InputSummary("(predicted)", label.path, m.pixels, counts.nodata, counts.ignored,
                                          m.pixel_accuracy, m.miou, image=item["image"]))
            total = total + counts
            shutil.rmtree(res.out_dir, ignore_errors=True)  # free the disk before the next image
    if total.confusion.total == 0:
        raise _no_pixels(f"the {len(labels)} image(s) of the data set")
    metrics = compute_metrics(total.confusion, names, set(names) - set(ign))
    return Evaluation(metrics, tuple(summaries), do_align, ign, time.perf_counter() - t0, model=card.id)
