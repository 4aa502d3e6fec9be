"""``vectorize_raster``: seamless land-cover polygons from a class raster, block by block.

The Python API behind ``geoseg vectorize``.  How it works (see docs/vectorize.md):

1. *Sieve* (only with ``min_area``): an exact block-wise version of GDAL's sieve
   (:mod:`geoseg.vector.components`): a scan task per block, one small global plan, and the remap
   applied inside each polygonize task.  The result equals ``rasterio.features.sieve`` on the
   whole raster.
2. *Polygonize* one task per block: connected components of the (sieved) block are labelled and
   GDAL polygonizes the label image in pixel coordinates, so every vertex is an integer and pieces
   from different blocks meet exactly.  Polygons that do not touch an inner block edge are final:
   they are transformed to the raster CRS, measured and spilled to a staging file at once; the
   others (open pieces) are staged for the merge.
3. *Merge* (after the block tasks, in a thread), streaming: a union-find over the pixel pairs
   on both sides of each seam (same class = same polygon; only the blocks' edge labels are
   needed) gives each output polygon's group of pieces and the last block holding one.  The
   blocks' staged pieces are then read in block order and each group is joined as soon as its
   last block has been read, by relinking rings (:mod:`geoseg.vector.pixel_union`; GEOS' coverage union
   for 8-connectivity, simplified pieces or a declined relink).  The result equals a single-pass
   polygonize of the whole raster (same polygons, same vertices up to order).
4. The main process streams the staging files into the output format (a temporary file renamed
   into place at the end) while the merge runs, then the merged polygons, and writes the
   per-class summary beside it.

Memory per task is bounded by the block size; the tasks stage their arrays and pieces on disk and
return paths and edge labels; the merge holds the groups still open at the current block.  What
grows with the scene is the largest output polygon (built whole: it is one feature).
No torch here; dask only in :func:`_run_graph`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
import time
import uuid
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError

from geoseg._version import __version__
from geoseg.errors import (
    EmptySceneError,
    InputFileError,
    MissingDependencyError,
    NotAClassRasterError,
    NotGeoreferencedError,
    OutputError,
    OutputExistsError,
    ParameterError,
    WorkerLostError,
)
from geoseg.io.grid import check_block_size
from geoseg.io.output import ensure_writable_dir, remove_with_sidecars
from geoseg.io.raster import ClassRaster, class_names_from_tags
from geoseg.vector.area import area_model, pixel_size_m
from geoseg.vector.merge import MergeResult, merge_task
from geoseg.vector.tasks import BlockResult, VectorizeSpec, polygonize_task, sieve_plan_task, sieve_scan_task
from geoseg.vector.write import SinkSpec, WriteResult, write_staged

__all__ = ["vectorize_raster", "VectorizeResult", "ClassSummary", "FORMATS", "parse_area", "parse_length",
           "NotAClassRasterError", "MissingDependencyError"]


@dataclass(frozen=True)
class Format:
    key: str
    driver: str
    extensions: tuple[str, ...]
    label: str


FORMATS: dict[str, Format] = {
    "gpkg": Format("gpkg", "GPKG", (".gpkg",), "GeoPackage"),
    "parquet": Format("parquet", "Parquet", (".parquet", ".geoparquet"), "GeoParquet"),
    "fgb": Format("fgb", "FlatGeobuf", (".fgb",), "FlatGeobuf"),
    "geojson": Format("geojson", "GeoJSON", (".geojson", ".json"), "GeoJSON (RFC 7946, WGS84)"),
}
FORMAT_ALIASES = {"geopackage": "gpkg", "geoparquet": "parquet", "flatgeobuf": "fgb", "json": "geojson"}

# --------------------------------------------------------------------------------------------
# option parsing
# --------------------------------------------------------------------------------------------

_AREA_UNITS = {"": 1.0, "m2": 1.0, "m²": 1.0, "sqm": 1.0, "ha": 1e4, "km2": 1e6, "km²": 1e6}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_area(value: str | float | int | None) -> float | None:
    """``'5000'``, ``'5000m2'``, ``'0.5ha'``, ``'1km2'`` -> square metres (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        area = float(value)
    else:
        m = re.fullmatch(_NUMBER + r"\s*([a-zA-Z²][a-zA-Z²0-9]*|)", value.strip())
        unit = m.group(2).lower() if m else None
        if not m or unit not in _AREA_UNITS:
            raise ParameterError(
                f"--min-area {value!r} is not an area; give square metres or hectares, e.g. 5000, 5000m2 or 0.5ha"
            )
        area = float(m.group(1)) * _AREA_UNITS[unit]
    if not math.isfinite(area) or area < 0:
        raise ParameterError(f"--min-area {value!r} must be a non-negative area, e.g. 0.5ha")
    return area


def parse_length(value: str | float | int | None) -> tuple[float, str] | None:
    """``'10'``/``'10m'`` -> (10.0, 'm'); ``'1.5px'`` -> (1.5, 'px'); None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        number, unit = float(value), "m"
    else:
        m = re.fullmatch(_NUMBER + r"\s*(m|px|)", value.strip().lower())
        if not m:
            raise ParameterError(
                f"--simplify {value!r} is not a length; give metres or pixels, e.g. 10, 10m or 1.5px"
            )
        number, unit = float(m.group(1)), m.group(2) or "m"
    if not math.isfinite(number) or number < 0:
        raise ParameterError(f"--simplify {value!r} must be a non-negative tolerance, e.g. 10m")
    return number, unit


def resolve_format(output: str | os.PathLike, fmt: str | None) -> Format:
    if fmt:
        key = FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if key not in FORMATS:
            raise ParameterError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return FORMATS[key]
    suffix = Path(output).suffix.lower()
    for f in FORMATS.values():
        if suffix in f.extensions:
            return f
    known = ", ".join(e for f in FORMATS.values() for e in f.extensions)
    raise ParameterError(
        f"cannot tell the output format from {os.fspath(output)!r}; use one of the extensions {known} "
        "or pass --format"
    )


# --------------------------------------------------------------------------------------------
# the input raster
# --------------------------------------------------------------------------------------------


def _class_names(src: rasterio.DatasetReader, band: int) -> dict[int, str]:
    """``CLASS_<value>`` tags (dataset, then band), as written by ``geoseg predict``."""
    return class_names_from_tags(src.tags(), src.tags(band))


def _colors(src: rasterio.DatasetReader, band: int) -> dict[int, str]:
    """The band's colour table as ``{value: "#RRGGBB"}`` (empty without one)."""
    try:
        cmap = src.colormap(band)
    except ValueError:  # no colour table
        return {}
    return {int(v): "#{:02X}{:02X}{:02X}".format(*rgba[:3]) for v, rgba in cmap.items()}


def _style_categories(info: ClassRaster, names: dict[int, str], present: np.ndarray,
                      selected: tuple[int, ...] | None) -> list:
    """The polygon layer's style: one category per named or present class (within ``selected``),
    coloured as in the raster's colour table; empty when the raster has none."""
    from geoseg.delivery.style import Category

    values = set(names) | {int(v) for v in present}
    if selected is not None:
        values &= set(selected)
    if not info.colors or not values <= set(info.colors):
        return []
    return [Category(v, names.get(v, f"class_{v}"), info.colors[v]) for v in sorted(values)]


def open_class_raster(path: str | os.PathLike, band: int = 1) -> ClassRaster:
    """Inspect a class raster; one-line InputError naming the fix when it cannot be vectorized."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"input raster {path} does not exist; check the path")
    if os.path.isdir(path):
        raise InputFileError(f"input raster {path} is a directory; give a class GeoTIFF such as landcover.tif")
    try:
        with rasterio.open(path) as src:
            if not 1 <= band <= src.count:
                raise ParameterError(f"--band {band} out of range: {path} has band(s) 1..{src.count}")
            dtype = src.dtypes[band - 1]
            flags = src.mask_flag_enums[band - 1]
            info = ClassRaster(
                path=path,
                band=band,
                width=src.width,
                height=src.height,
                dtype=dtype,
                crs_wkt=src.crs.to_wkt() if src.crs else None,
                transform=tuple(src.transform)[:6],  # type: ignore[arg-type]
                nodata=src.nodata,
                masked=MaskFlags.all_valid not in flags,
                class_names=_class_names(src, band),
                colors=_colors(src, band),
            )
    except RasterioIOError:
        raise InputFileError(f"{path} is not a readable raster; give a class GeoTIFF such as landcover.tif") from None
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise NotAClassRasterError(
            f"{path} is {info.dtype}, not an integer class raster; vectorize a class map such as geoseg's "
            "landcover.tif, or convert it first (e.g. gdal_translate -ot Byte)"
        )
    if not info.crs_wkt:
        raise NotGeoreferencedError(
            f"{path} has no CRS; areas and output coordinates need one: set it with "
            "gdal_edit.py -a_srs EPSG:<code> (and -a_ullr if it has no geotransform)"
        )
    if info.transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        raise NotGeoreferencedError(
            f"{path} has no geotransform; set it with gdal_edit.py -a_ullr <ulx> <uly> <lrx> <lry>"
        )
    crs = CRS.from_wkt(info.crs_wkt)
    if not (crs.is_projected or crs.is_geographic):
        raise NotGeoreferencedError(
            f"{path} has a CRS that is neither projected nor geographic; reproject it "
            "(e.g. gdalwarp -t_srs EPSG:<utm code>) so areas can be computed"
        )
    return info


# --------------------------------------------------------------------------------------------
# the dask graph
# --------------------------------------------------------------------------------------------

SCHEDULERS = ("threads", "processes", "synchronous")


def _run_graph(spec: VectorizeSpec, scheduler: str, workers: int, progress,
               pool: ProcessPoolExecutor | None = None) -> list[BlockResult]:
    """Run the block tasks (sieve scan, plan, polygonize); the seam merge runs after, see
    :func:`vectorize_raster`.  ``pool``: the worker processes for ``scheduler="processes"``."""
    import dask
    from dask.callbacks import Callback
    from dask.delayed import delayed

    n = len(spec.grid)
    plan = None
    if spec.sieve_pixels > 1:  # scans and plan are staged files; only paths and counts go through dask
        scans = [delayed(sieve_scan_task, pure=True)(spec, i, dask_key_name=f"sieve-scan-{i}") for i in range(n)]
        plan = delayed(sieve_plan_task, pure=True)(spec, *scans, dask_key_name="sieve-plan")
    blocks = [delayed(polygonize_task, pure=True)(spec, i, plan, dask_key_name=f"polygonize-{i}")
              for i in range(n)]

    class _Ticks(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: D401 - dask signature
            k = key if isinstance(key, str) else str(key)
            if k.startswith(("sieve-scan-", "polygonize-")):
                progress.advance(1)

    import dask.local
    import dask.multiprocessing
    import dask.threaded

    # the scheduler function itself, so dask does not import distributed to look for a client
    get = {"threads": dask.threaded.get, "processes": dask.multiprocessing.get,
           "synchronous": dask.local.get_sync}[scheduler]
    kwargs: dict = {} if scheduler == "synchronous" else {"num_workers": workers}
    if scheduler == "processes":
        if pool is None:
            raise ValueError("the processes scheduler needs a pool of worker processes")
        kwargs["pool"] = pool
    with _Ticks():
        done = dask.compute(*blocks, optimize_graph=False, scheduler=get, **kwargs)
    return sorted(done, key=lambda b: b.index)


def _merged(merge: Future, progress) -> MergeResult:
    """The seam merge's result (it runs in a thread), then a step of the progress bar."""
    merged = _result(merge, progress)
    progress.advance(1)
    return merged


def _result(future: Future, progress) -> Any:
    """``future.result()``, redrawing the progress bar (its elapsed time) twice a second meanwhile:
    the bar has no thread of its own (see geoseg._util.progress)."""
    while True:
        try:
            return future.result(timeout=0.5)
        except TimeoutError:
            progress.refresh()


def _write(writer: ProcessPoolExecutor | None, writes: list[Future], sink: SinkSpec, paths: list[str],
           append: bool, final: bool, progress) -> Callable[[], WriteResult]:
    """Start :func:`~geoseg.vector.write.write_staged` in the ``writer`` process (``lean``: no
    dataframe libraries there); the returned call waits for its result.  Without a writer process,
    the returned call writes."""
    if writer is None:
        return lambda: write_staged(sink, paths, append, final)
    future = writer.submit(write_staged, sink, paths, append, final, True)
    writes.append(future)
    return lambda: _result(future, progress)


def _start_writer(stack: contextlib.ExitStack) -> ProcessPoolExecutor:
    """One forked worker process for the writer, started now (a pool forks when first used),
    shut down with ``stack``."""
    pool = stack.enter_context(_process_pool(1))
    pool.submit(os.getpid).result()
    return pool


def fork_is_safe() -> bool:
    """Whether block tasks may run in forked worker processes: on a platform with ``fork`` and
    with no other thread alive in this process.

    GDAL's polygonize holds the GIL (rasterio builds every shape in Python), so only processes
    polygonize blocks in parallel, and forked ones start in milliseconds with every module
    already imported.  Forking a process in which other threads run (torch's or dask's pools
    after ``geoseg predict``; geoseg's own progress bar has no refresh thread) can deadlock the child, and fresh
    interpreters (spawn, forkserver) re-import the caller's ``__main__``, which breaks scripts
    without an ``if __name__ == "__main__"`` guard: in those cases the blocks run on threads.
    """
    import multiprocessing
    import threading

    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """Forked worker processes for the block tasks (see :func:`fork_is_safe`)."""
    import multiprocessing

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init,
                               initargs=(os.getpid(),))


def _worker_init(parent: int) -> None:
    """In each worker process: Ctrl-C is the parent's to handle (it cleans up and ends the pool),
    SIGTERM ends the worker as by default, and the worker ends when its parent dies (Linux), rather
    than waiting for tasks forever."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSummary:
    value: int
    name: str
    count: int
    area_ha: float
    share: float  # percent of the vectorized area


def summary_rows(stats: dict[int, list], names: dict[int, str]) -> list[ClassSummary]:
    total = sum(s[1] for s in stats.values())
    rows = []
    for v in sorted(stats):
        count, area = stats[v]
        rows.append(ClassSummary(v, names[v], int(count), area / 1e4, 100.0 * area / total if total else 0.0))
    return rows


def format_summary(rows: Sequence[ClassSummary]) -> str:
    lines = [f"{'class':>6}  {'name':<22}{'polygons':>10}{'area ha':>14}{'share':>8}"]
    for r in rows:
        lines.append(f"{r.value:>6}  {r.name:<22}{r.count:>10}{r.area_ha:>14.2f}{r.share:>7.1f}%")
    total_n = sum(r.count for r in rows)
    total_a = sum(r.area_ha for r in rows)
    lines.append(f"{'':>6}  {'total':<22}{total_n:>10}{total_a:>14.2f}{100.0 if rows else 0.0:>7.1f}%")
    return "\n".join(lines)


def summary_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(output)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(stem + ".summary.csv"), out.with_name(stem + ".summary.json")


# --------------------------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorizeResult:
    output: str
    format: str
    layer: str | None
    features: int
    summary: tuple[ClassSummary, ...]
    summary_csv: str
    summary_json: str
    crs: str
    area_crs: str
    min_area_m2: float | None
    sieve_pixels: int
    blocks: int
    seconds: float
    warnings: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _check_format_dependencies(fmt: Format) -> None:
    import importlib.util

    if fmt.key == "parquet" and importlib.util.find_spec("pyarrow") is None:  # found, not imported
        raise MissingDependencyError(
            "GeoParquet output needs the pyarrow package; install it (pip install pyarrow) "
            "or choose another format, e.g. -o landcover.gpkg"
        )


def _select_classes(classes: Sequence[str | int] | str | None, names: dict[int, str]) -> tuple[int, ...] | None:
    if classes is None:
        return None
    items = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else list(classes)
    items = [c for c in items if c != ""]
    if not items:
        raise ParameterError("--classes is empty; give class names or values, e.g. --classes forest,water")
    by_name = {n.lower(): v for v, n in names.items()}
    out = []
    for item in items:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and re.fullmatch(r"-?\d+", item)):
            out.append(int(item))
        elif str(item).lower() in by_name:
            out.append(by_name[str(item).lower()])
        else:
            known = ", ".join(f"{n} ({v})" for v, n in sorted(names.items())) or "none: the raster has no class names"
            raise ParameterError(f"unknown class {item!r} in --classes; known classes: {known}; or give class values")
    return tuple(sorted(set(out)))


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move a finished temporary file into place; without ``overwrite`` never replace a file that
    another run created meanwhile (a hard link fails if the name exists; rename would not)."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise OutputExistsError(
            f"{final} was created by another run meanwhile; pass --overwrite to replace it"
        ) from None
    except OSError:  # no hard links on this file system: check, then rename
        if final.exists():
            raise OutputExistsError(f"{final} was created by another run meanwhile; pass --overwrite to replace it")
        os.replace(tmp, final)
        return
    os.unlink(tmp)


def _check_outputs(output: Path, extra: Sequence[Path], overwrite: bool) -> None:
    if output.is_dir():
        raise OutputError(f"output {output} is a directory; give a file path such as {output / 'landcover.gpkg'}")
    if not overwrite:
        existing = [str(p) for p in (output, *extra) if p.exists()]
        if existing:
            raise OutputExistsError(f"{', '.join(existing)} already exists; pass --overwrite or choose another -o")
    ensure_writable_dir(output.parent, "choose a writable -o path")


def vectorize_raster(
    raster: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str | None = None,
    layer: str | None = None,
    band: int = 1,
    min_area: str | float | None = None,
    connectivity: int = 4,
    simplify: str | float | None = None,
    classes: Sequence[str | int] | str | None = None,
    block_size: int = 2048,
    workers: int | None = None,
    scheduler: str = "processes",
    overwrite: bool = False,
    progress: bool | None = None,
    style: bool = True,
) -> VectorizeResult:
    """Vectorize the class raster ``raster`` into ``output`` (GPKG, GeoParquet, FlatGeobuf or GeoJSON).

    ``min_area``: square metres, or a string with a unit (``'0.5ha'``, ``'5000m2'``); patches
    smaller than that are merged into their largest neighbour on the raster first (GDAL's
    sieve, exact across blocks).  ``simplify``: coverage simplification tolerance in metres
    (or ``'1.5px'``).  ``classes``: names or values to keep.  ``connectivity``: 4 or 8, for
    both the sieve and the polygons.  Writes ``<stem>.summary.csv`` and ``<stem>.summary.json``
    beside the output.  Nothing is written at the final paths until everything succeeded.

    ``scheduler``: ``processes`` (default) runs blocks truly in parallel in forked workers (GDAL's
    polygonize, as rasterio exposes it, holds the GIL), or on threads where forking is not safe
    (see :func:`fork_is_safe`); ``threads`` avoids starting processes (tiny rasters);
    ``synchronous`` runs everything in this thread.  ``style``: give a GeoPackage the raster's
    palette as its default QGIS style (when the raster has a colour table).
    """
    from geoseg._util.progress import make_progress

    t0 = time.perf_counter()
    fmt = resolve_format(output, format)
    _check_format_dependencies(fmt)
    if connectivity not in (4, 8):
        raise ParameterError(f"connectivity {connectivity} must be 4 or 8")
    block_size = check_block_size(block_size, align=1)  # vectorize only reads blocks: any size
    if scheduler not in SCHEDULERS:
        raise ParameterError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    n_workers = default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise ParameterError(f"--workers {workers} must be >= 1")
    min_area_m2 = parse_area(min_area)
    tolerance = parse_length(simplify)
    info = open_class_raster(raster, band)
    model = area_model(info)
    pix_area, pix_side = pixel_size_m(info, model)
    sieve_pixels = 0
    if min_area_m2:
        sieve_pixels = max(0, math.ceil(min_area_m2 / pix_area - 1e-9))
        if sieve_pixels <= 1:
            sieve_pixels = 0
    simplify_px = None
    if tolerance and tolerance[0] > 0:
        simplify_px = tolerance[0] if tolerance[1] == "px" else tolerance[0] / pix_side
    selected = _select_classes(classes, info.class_names)

    out = Path(output)
    csv_path, json_path = summary_paths(out)
    _check_outputs(out, (csv_path, json_path), overwrite)
    layer_name = (layer or out.stem) if fmt.key == "gpkg" else None
    run_id = uuid.uuid4().hex[:12]
    staging = out.parent / f".{out.name}.{run_id}.parts"
    # the format's own extension: GDAL's FlatGeobuf driver makes a folder of a path without ".fgb"
    tmp_out = out.parent / f".{out.name}.{run_id}.part{fmt.extensions[0]}"
    tmp_csv = csv_path.with_name(f".{csv_path.name}.{run_id}.tmp")
    tmp_json = json_path.with_name(f".{json_path.name}.{run_id}.tmp")

    spec = VectorizeSpec(
        path=os.path.abspath(info.path), band=band, height=info.height, width=info.width, block_size=block_size,
        transform=info.transform, masked=info.masked, connectivity=connectivity, sieve_pixels=sieve_pixels,
        simplify_px=simplify_px, selected=selected, area=model, staging=str(staging),
    )
    n_blocks = len(spec.grid)
    bar = make_progress(n_blocks * (2 if sieve_pixels else 1) + 2, "blocks", progress)  # + merge, write
    messages: list[str] = []
    merge_pool = ThreadPoolExecutor(1, thread_name_prefix="geoseg-merge")
    writes: list[Future] = []
    sink: SinkSpec | None = None  # (its staging GeoPackage is removed after a failure)
    stack = contextlib.ExitStack()
    try:
        staging.mkdir()
        if scheduler == "processes" and not fork_is_safe():
            scheduler = "threads"  # see fork_is_safe
        if scheduler == "processes":
            with _process_pool(n_workers) as pool:  # the workers end with the graph, and their memory
                blocks = _run_graph(spec, scheduler, n_workers, bar, pool)
            # one fresh process writes (forked now: no other thread runs yet)
            writer = _start_writer(stack) if fork_is_safe() else None
        else:
            blocks = _run_graph(spec, scheduler, n_workers, bar)
            writer = None
        if sum(b.valid_pixels for b in blocks) == 0:
            raise EmptySceneError(f"{info.path} has no valid pixel (all nodata); nothing to vectorize")
        present = np.unique(np.concatenate([b.present_values for b in blocks]))
        if selected is not None:
            absent = sorted(set(selected) - set(present.tolist()))
            if absent:
                messages.append(
                    f"--classes {', '.join(map(str, absent))}: no such value in {info.path} (nodata excluded; values "
                    f"present: {', '.join(map(str, present[:20].tolist()))}{' ...' if present.size > 20 else ''})"
                )
            present = present[np.isin(present, selected)]
        names = dict(info.class_names)
        missing = [int(v) for v in present if int(v) not in names]
        if missing:
            for v in missing:
                names[v] = f"class_{v}"
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            hint = (f"; {len(present)} distinct values: is this a class raster at all (not, say, band {band} of an "
                    "image)?" if len(present) > 255 else "")
            messages.append(
                f"class value(s) {shown} have no name in {info.path} (no CLASS_<value> band tag); named "
                f"class_<value>{hint}"
            )
        crs = CRS.from_wkt(info.crs_wkt)
        epsg = crs.to_epsg()
        sink = SinkSpec(str(tmp_out), fmt.key, fmt.driver, layer_name or out.stem, info.crs_wkt,
                        f"EPSG:{epsg}" if epsg else crs.to_wkt(), names)
        # The seam merge runs in a thread while the blocks' final polygons are written, the merged
        # ones after them.  With worker processes, a freshly forked process writes: this one (which
        # holds the merge) never loads the writer's libraries, and the writer loads pyogrio without
        # pandas & co. (see geoseg.vector.write).  (Merging first, then writing, lowered the peak by
        # about 50 MiB on a 10k² raster but took 1.2x the time on an idle 2-core machine.)
        block_paths = [b.staged for b in blocks if b.staged]
        if fmt.key == "parquet":  # cannot be appended to: one write after the merge
            merged = _merged(merge_pool.submit(merge_task, spec, *blocks), bar)
            del blocks
            parts = [_write(writer, writes, sink, block_paths + merged.staged, append=False, final=True,
                            progress=bar)()]
        else:
            first = _write(writer, writes, sink, block_paths, append=False, final=False, progress=bar)
            merge_future = merge_pool.submit(merge_task, spec, *blocks)
            del blocks
            parts = [first()]  # without a writer process, written here while the merge runs
            merged = _merged(merge_future, bar)
            parts.append(_write(writer, writes, sink, merged.staged, append=True, final=True, progress=bar)())
        bar.advance(1)
        bar.close()
        features = sum(p.count for p in parts)
        stats: dict[int, list] = {int(v): [0, 0.0] for v in present}
        for part in parts:
            for v, (cnt, area) in part.stats.items():
                stats[v][0] += cnt
                stats[v][1] += area
        rows = summary_rows(stats, names)
        seconds = time.perf_counter() - t0
        record = {
            "geoseg_version": __version__,
            "input": os.path.abspath(info.path),
            "output": os.path.abspath(out),
            "format": fmt.key,
            "layer": layer_name,
            "crs": crs.to_string(),
            "area_crs": model.description,
            "options": {"band": band, "min_area_m2": min_area_m2, "sieve_pixels": sieve_pixels,
                        "connectivity": connectivity, "simplify": None if tolerance is None else
                        {"value": tolerance[0], "unit": tolerance[1], "pixels": simplify_px},
                        "classes": list(selected) if selected is not None else None, "block_size": block_size},
            "features": features,
            "classes": [r.__dict__ for r in rows],
            "total_area_ha": sum(r.area_ha for r in rows),
            "seconds": round(seconds, 3),
            "warnings": messages,
        }
        with open(tmp_csv, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["class", "name", "count", "area_ha", "share_percent"])
            for r in rows:
                wr.writerow([r.value, r.name, r.count, f"{r.area_ha:.4f}", f"{r.share:.3f}"])
        tmp_json.write_text(json.dumps(record, indent=2) + "\n")
        categories = _style_categories(info, names, present, selected) if fmt.key == "gpkg" and style else []
        if categories:  # QGIS opens the layer styled like the raster (default style in layer_styles)
            from geoseg.delivery.style import embed_gpkg_style

            embed_gpkg_style(tmp_out, layer_name or "", categories)
        for tmp, final in ((tmp_out, out), (tmp_csv, csv_path), (tmp_json, json_path)):
            _publish(tmp, final, overwrite)
    except BaseException as exc:
        try:
            for f in writes:  # a worker may still be writing: let it end before its file goes
                f.cancel() or f.exception()
        finally:
            remove_with_sidecars(tmp_out, tmp_csv, tmp_json, *([sink.staged_path] if sink else []))
        if isinstance(exc, BrokenProcessPool):
            if writes:
                raise WorkerLostError(
                    "the vectorize writer process was killed (usually out of memory: GDAL needs about 66 bytes "
                    "per vertex of the largest polygon to write it); free memory and run again"
                ) from None
            raise WorkerLostError(
                "a vectorize worker process was killed (usually out of memory); free memory, or lower "
                f"--workers (was {n_workers}) or --block-size (was {block_size})"
            ) from None
        raise
    finally:
        merge_pool.shutdown(wait=True)  # the merge must end before its staging folder goes
        stack.close()
        bar.close()  # (again: closing twice is harmless)
        shutil.rmtree(staging, ignore_errors=True)
    for m in messages:
        warnings.warn(m, UserWarning, stacklevel=2)
    return VectorizeResult(
        output=str(out), format=fmt.key, layer=layer_name, features=features, summary=tuple(rows),
        summary_csv=str(csv_path), summary_json=str(json_path), crs=crs.to_string(),
        area_crs=model.description, min_area_m2=min_area_m2, sieve_pixels=sieve_pixels, blocks=n_blocks,
        seconds=seconds, warnings=tuple(messages),
        extra={"merged_polygons": merged.groups, "seam_pieces": merged.pieces,
               "merge_peak_pieces": merged.peak_pieces, "relinked_unions": merged.relinked,
               "geos_unions": merged.geos_unions},
    )
