"""``evaluate_rasters`` / ``evaluate_model``: the Python API behind ``geoseg evaluate``.

A prediction raster is compared with a truth raster window by window: every
window is one dask task that reads both rasters (by path), and returns a small
:class:`~geoseg.metrics.ConfusionMatrix`; the matrices are summed and the metrics
computed once (:mod:`geoseg.metrics` documents every definition).  Memory is
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

:func:`write_confusion_png` and :func:`write_json` write atomically (temp file + rename).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from geoseg.errors import (
    EmptySceneError,
    GridMismatchError,
    InputError,
    InputFileError,
    OutputError,
    OutputExistsError,
    ParameterError,
)
from geoseg.evaluation.metrics import ConfusionMatrix, Metrics, compute_metrics, confusion_counts
from geoseg.io.grid import Window
from geoseg.io.output import ensure_writable_dir
from geoseg.io.raster import ClassRaster, class_names_from_tags, configure_gdal_cache, grid_differences, read_band

DEFAULT_BLOCK_SIZE = 1024


# -- inputs -------------------------------------------------------------------------------------------


def open_class_raster(path: str | os.PathLike, role: str, allow_ungeoreferenced: bool = False) -> ClassRaster:
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


# -- the per-window task ------------------------------------------------------------------------------


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

    def __add__(self, other: "WindowCounts") -> "WindowCounts":
        return WindowCounts(self.confusion + other.confusion, self.nodata + other.nodata,
                            self.ignored + other.ignored)


def window_counts(spec: PairSpec, window: Window) -> WindowCounts:
    """Confusion matrix and excluded-pixel counts of one window of the prediction grid."""
    import rasterio

    configure_gdal_cache()

    with rasterio.open(spec.pred_path) as src:
        pred, pred_valid = read_band(src, 1, window, spec.pred_masked)
    with rasterio.open(spec.truth_path) as src:
        if spec.align:
            from affine import Affine
            from rasterio.crs import CRS
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            # Without a nodata value an alpha band marks what lies outside the truth's footprint.
            add_alpha = spec.truth_nodata is None
            with WarpedVRT(src, crs=CRS.from_wkt(spec.crs_wkt), transform=Affine(*spec.transform),
                           width=spec.width, height=spec.height, resampling=Resampling.nearest,
                           add_alpha=add_alpha) as vrt:
                truth, truth_valid = read_band(vrt, 1, window, True)
        else:
            truth, truth_valid = read_band(src, 1, window, spec.truth_masked)
    valid = pred_valid & truth_valid
    ignored = valid & np.isin(truth, spec.ignore) if spec.ignore else np.zeros(valid.shape, dtype=bool)
    cm = confusion_counts(truth, pred, valid & ~ignored)
    return WindowCounts(cm, int(valid.size - valid.sum()), int(ignored.sum()))


def plan_windows(height: int, width: int, block_size: int) -> list[Window]:
    """Row-major windows of ``block_size`` covering the raster (clipped at the right/bottom edge)."""
    if block_size <= 0:
        raise ParameterError(f"block size {block_size} must be positive; use e.g. --block-size {DEFAULT_BLOCK_SIZE}")
    return [Window(r, c, min(block_size, height - r), min(block_size, width - c))
            for r in range(0, height, block_size) for c in range(0, width, block_size)]


def run_windows(spec: PairSpec, windows: Sequence[Window], scheduler: str, workers: int, progress) -> WindowCounts:
    """Run one dask task per window and sum their counts."""
    from geoseg._util.execution import Execution, run_each

    total = WindowCounts(ConfusionMatrix.empty(), 0, 0)
    for wc in run_each(window_counts, windows, "eval-window", spec, Execution(scheduler, workers), progress):
        total = total + wc
    return total


# -- results ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSummary:
    """One prediction/truth pair of an evaluation."""

    prediction: str
    truth: str
    pixels: int
    nodata_pixels: int
    ignored_pixels: int
    pixel_accuracy: float
    miou: float
    image: str | None = None  # the scene, with evaluate_model


@dataclass(frozen=True)
class Evaluation:
    metrics: Metrics
    inputs: tuple[InputSummary, ...]
    aligned: bool
    ignore: tuple[int, ...]
    seconds: float
    model: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def nodata_pixels(self) -> int:
        return sum(i.nodata_pixels for i in self.inputs)

    @property
    def ignored_pixels(self) -> int:
        return sum(i.ignored_pixels for i in self.inputs)

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        from geoseg._version import __version__

        return {
            "geoseg_version": __version__,
            "model": self.model,
            "inputs": [
                {"prediction": i.prediction, "truth": i.truth, **({"image": i.image} if i.image else {}),
                 "pixels": i.pixels, "nodata_pixels": i.nodata_pixels, "ignored_pixels": i.ignored_pixels,
                 "pixel_accuracy": num(i.pixel_accuracy), "miou": num(i.miou)}
                for i in self.inputs
            ],
            "aligned": self.aligned,
            "ignore": list(self.ignore),
            "nodata_pixels": self.nodata_pixels,
            "ignored_pixels": self.ignored_pixels,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
            **self.metrics.to_json(),
        }


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
                 scheduler: str, workers: int, progress: bool | None) -> tuple[WindowCounts, int]:
    from geoseg._util.progress import make_progress

    _check_pair(pred, truth, align)
    spec = PairSpec(
        pred_path=os.path.abspath(pred.path), truth_path=os.path.abspath(truth.path), pred_masked=pred.masked,
        truth_masked=truth.masked, truth_nodata=truth.nodata, align=align, crs_wkt=pred.crs_wkt,
        transform=pred.transform, width=pred.width, height=pred.height, ignore=ignore,
    )
    windows = plan_windows(pred.height, pred.width, block_size)
    bar = make_progress(len(windows), "windows", progress)
    try:
        counts = run_windows(spec, windows, scheduler, workers, bar)
    finally:
        bar.close()
    return counts, len(windows)


def _check_options(block_size: int, workers: int | None, scheduler: str) -> int:
    plan_windows(1, 1, block_size)
    from geoseg._util.execution import check_scheduler, default_workers

    check_scheduler(scheduler)
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ParameterError(f"--workers {workers} must be >= 1")
    return n


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
    n_workers = _check_options(block_size, workers, scheduler)
    ign = _ignore_tuple(ignore)
    explicit = resolve_classes(classes)
    p = open_class_raster(pred, "prediction", allow_ungeoreferenced)
    t = open_class_raster(truth, "truth", allow_ungeoreferenced)
    counts, _ = _pair_counts(p, t, align, ign, block_size, scheduler, n_workers, progress)
    if counts.confusion.total == 0:
        raise _no_pixels(f"{p.path} vs {t.path}")
    names, declared, warnings = _names_and_declared(explicit, [p, t], ign)
    m = compute_metrics(counts.confusion, names, declared)
    summary = InputSummary(p.path, t.path, m.pixels, counts.nodata, counts.ignored, m.pixel_accuracy, m.miou)
    return Evaluation(m, (summary,), align, ign, time.perf_counter() - t0, warnings=tuple(warnings))


# -- evaluation of a model on a data set --------------------------------------------------------------

#: ``predict_scene`` options a data config may set under ``predict:``.
PREDICT_OPTIONS = ("bands", "tile_size", "overlap", "blend", "batch_size", "block_size", "device", "amp")


def load_data_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a data config; image/label paths become absolute (relative to the config)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"data config {path} does not exist; give a YAML file listing images and labels")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise InputError(f"data config {path} is not valid YAML ({first}); fix it") from None
    example = "images: [{image: scene.tif, label: labels.tif}]"
    if _is_training_config(raw):
        return _training_validation(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list) or not raw["images"]:
        raise InputError(f"data config {path} needs a non-empty 'images' list, e.g. {example}")
    unknown = set(raw) - {"images", "ignore", "align", "predict"}
    if unknown:
        raise InputError(f"data config {path} has unknown key(s) {', '.join(sorted(unknown))}; "
                         "allowed: images, ignore, align, predict")
    items = []
    for i, item in enumerate(raw["images"]):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise InputError(f"entry #{i + 1} of 'images' in {path} needs 'image' and 'label', e.g. {example}")
        pair = {k: str((path.parent / str(item[k])).resolve()) for k in ("image", "label")}
        for k, role in (("image", "image"), ("label", "label")):
            if not os.path.exists(pair[k]):
                raise InputFileError(f"{role} {pair[k]} (entry #{i + 1} of {path}) does not exist; check the path")
        items.append(pair)
    opts = raw.get("predict") or {}
    if not isinstance(opts, dict) or set(opts) - set(PREDICT_OPTIONS):
        raise InputError(f"'predict' in {path} may only set {', '.join(PREDICT_OPTIONS)}")
    return {"images": items, "ignore": raw.get("ignore"), "align": bool(raw.get("align", False)),
            "predict": dict(opts)}


def _is_training_config(raw: Any) -> bool:
    """A ``geoseg train`` config: image globs, ``pairs`` or a ``val_scenes`` split."""
    if not isinstance(raw, dict):
        return False
    images = raw.get("images")
    return bool({"pairs", "val_scenes", "labels", "arch"} & set(raw)) or (
        isinstance(images, list) and bool(images) and all(isinstance(i, str) for i in images))


def _training_validation(path: Path) -> dict[str, Any]:
    """The validation scenes of a training config (split by ``val_scenes``), as a data config."""
    from geoseg.training.config import build_config
    from geoseg.training.data import VECTOR_EXT, validation_pairs

    try:
        cfg = build_config(path)
        pairs = validation_pairs(cfg)
    except ParameterError as e:
        raise InputError(f"training config {path}: {e}") from None
    vector = [p.label for p in pairs if p.attribute or Path(p.label).suffix.lower() in VECTOR_EXT]
    if vector:
        raise InputError(f"label {vector[0]} is a vector layer; rasterize it onto the image grid first "
                         "(e.g. gdal_rasterize) and list image/label rasters in an evaluation config")
    return {"images": [{"image": p.image, "label": p.label} for p in pairs], "ignore": cfg.ignore_index,
            "align": cfg.align_labels, "predict": {}}


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
    n_workers = _check_options(block_size, workers, scheduler)
    ign = _ignore_tuple(cfg["ignore"] if ignore is None else ignore)
    do_align = cfg["align"] if align is None else bool(align)
    model_path = resolve(model)
    card = read_card(model_path)
    names = {c.value: c.name for c in card.classes}
    labels = [open_class_raster(it["label"], "label") for it in cfg["images"]]  # fail before any prediction
    popts = dict(cfg["predict"])
    if device is not None:
        popts["device"] = device
    total = WindowCounts(ConfusionMatrix.empty(), 0, 0)
    summaries = []
    with tempfile.TemporaryDirectory(prefix="geoseg-evaluate-") as tmp:
        for i, (item, label) in enumerate(zip(cfg["images"], labels)):
            res = predict_scene(item["image"], model_path, Path(tmp) / str(i), workers=n_workers,
                                scheduler=scheduler, progress=progress, **popts)
            pred = open_class_raster(res.landcover, "prediction")
            counts, _ = _pair_counts(pred, label, do_align, ign, block_size, scheduler, n_workers, False)
            m = compute_metrics(counts.confusion, names, set(names) - set(ign))
            summaries.append(InputSummary("(predicted)", label.path, m.pixels, counts.nodata, counts.ignored,
                                          m.pixel_accuracy, m.miou, image=item["image"]))
            total = total + counts
            shutil.rmtree(res.out_dir, ignore_errors=True)  # free the disk before the next image
    if total.confusion.total == 0:
        raise _no_pixels(f"the {len(labels)} image(s) of the data set")
    metrics = compute_metrics(total.confusion, names, set(names) - set(ign))
    return Evaluation(metrics, tuple(summaries), do_align, ign, time.perf_counter() - t0, model=card.id)


# -- outputs ------------------------------------------------------------------------------------------


def check_output_files(paths: Iterable[str | os.PathLike | None], overwrite: bool) -> None:
    """Refuse early: an output that exists without ``overwrite``, or a folder we cannot write into."""
    for p in paths:
        if p is None or os.fspath(p) == "-":
            continue
        p = Path(p)
        if p.is_dir():
            raise OutputError(f"output {p} is a directory; give a file path")
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p} already exists; pass --overwrite or choose another path")
        ensure_writable_dir(p.parent, "choose a writable path")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], overwrite: bool = False) -> str:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite or choose another path")
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise OutputError(f"cannot write {path} ({e.strerror or e}); choose a writable path") from None
    except BaseException:
        _unlink(tmp)
        raise
    return str(path)


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


def write_json(evaluation: Evaluation, path: str | os.PathLike, overwrite: bool = False) -> str:
    text = json.dumps(evaluation.to_json(), indent=2, allow_nan=False) + "\n"

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    return atomic_write(path, write, overwrite)


def _compact(n: int) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def write_confusion_png(metrics: Metrics, path: str | os.PathLike, overwrite: bool = False,
                        title: str | None = None) -> str:
    """Row-normalised confusion matrix (share of each truth class) with pixel counts, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = metrics.confusion.counts.astype(np.float64)
    k = len(metrics.classes)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
    labels = [f"{c.name} ({c.value})" if c.name != str(c.value) else c.name for c in metrics.classes]
    side = min(16.0, max(5.0, 0.55 * k + 3.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the truth class (row)")
    ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if k <= 25:
        fs = 9 if k <= 10 else 7
        for i in range(k):
            for j in range(k):
                if cm[i, j] == 0 and not (rows[i, 0] > 0):
                    continue
                s = share[i, j]
                ax.text(j, i, f"{100 * s:.0f}%\n{_compact(int(cm[i, j]))}" if not np.isnan(s) else "",
                        ha="center", va="center", fontsize=fs,
                        color="white" if (not np.isnan(s) and s > 0.5) else "black")
    head = title or "confusion matrix"
    ax.set_title(f"{head}\nmIoU {metrics.miou:.3f}  pixel accuracy {metrics.pixel_accuracy:.3f}  "
                 f"kappa {metrics.kappa:.3f}  ({metrics.pixels} pixels)", fontsize=10)

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png")

    return atomic_write(path, write, overwrite)
