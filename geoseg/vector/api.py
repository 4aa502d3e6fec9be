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

The rooms: options (:mod:`~geoseg.vector.options`), the input raster (:mod:`~geoseg.vector.source`), the area
model (:mod:`~geoseg.vector.area`), the block tasks (:mod:`~geoseg.vector.tasks`), the seam merge
(:mod:`~geoseg.vector.merge`), the writer (:mod:`~geoseg.vector.write`), the worker processes
(:mod:`~geoseg.vector.workers`) and the summary (:mod:`~geoseg.vector.summary`); this module runs them in the
run skeleton of :class:`geoseg.io.run.RunFolder`, and its old names stay importable here.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.crs import CRS

from geoseg._util.execution import default_workers as default_workers
from geoseg._util.progress import make_progress
from geoseg._version import __version__
from geoseg.errors import EmptySceneError, MissingDependencyError, NotAClassRasterError, OutputError, OutputExistsError
from geoseg.io.output import ensure_writable_dir, remove_with_sidecars
from geoseg.io.raster import ClassRaster
from geoseg.io.run import RunFolder
from geoseg.vector.area import area_model as area_model
from geoseg.vector.area import pixel_size_m as pixel_size_m
from geoseg.vector.merge import MergeResult, merge_task
from geoseg.vector.options import FORMAT_ALIASES as FORMAT_ALIASES
from geoseg.vector.options import FORMATS, Options, check_options, parse_area, parse_length, select_classes
from geoseg.vector.options import SCHEDULERS as SCHEDULERS
from geoseg.vector.options import Format as Format
from geoseg.vector.options import resolve_format as resolve_format
from geoseg.vector.source import open_vector_source, style_categories
from geoseg.vector.summary import ClassSummary, class_stats, present_classes, summary_rows, write_summary
from geoseg.vector.summary import format_summary as format_summary
from geoseg.vector.summary import summary_paths as summary_paths
from geoseg.vector.tasks import BlockResult, VectorizeSpec, polygonize_task, sieve_plan_task, sieve_scan_task
from geoseg.vector.workers import fork_is_safe, wait_for, worker_lost
from geoseg.vector.workers import process_pool as _process_pool
from geoseg.vector.write import SinkSpec, WriteResult, write_staged

__all__ = ["vectorize_raster", "VectorizeResult", "ClassSummary", "FORMATS", "parse_area", "parse_length",
           "NotAClassRasterError", "MissingDependencyError"]


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


# --------------------------------------------------------------------------------------------
# the block tasks: a dask graph on threads or forked worker processes
# --------------------------------------------------------------------------------------------


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


def _run_blocks(spec: VectorizeSpec, opts: Options, progress,
                stack: contextlib.ExitStack) -> tuple[list[BlockResult], ProcessPoolExecutor | None]:
    """The block results, and the writer process (None: this process writes).  ``processes`` falls back to
    threads where forking is not safe (see :func:`~geoseg.vector.workers.fork_is_safe`)."""
    scheduler = opts.scheduler
    if scheduler == "processes" and not fork_is_safe():
        scheduler = "threads"  # see fork_is_safe
    if scheduler != "processes":
        return _run_graph(spec, scheduler, opts.workers, progress), None
    with _process_pool(opts.workers) as pool:  # the workers end with the graph, and their memory
        blocks = _run_graph(spec, scheduler, opts.workers, progress, pool)
    # one fresh process writes (forked now: no other thread runs yet)
    return blocks, (_start_writer(stack) if fork_is_safe() else None)


def _start_writer(stack: contextlib.ExitStack) -> ProcessPoolExecutor:
    """One forked worker process for the writer, started now (a pool forks when first used),
    shut down with ``stack``."""
    pool = stack.enter_context(_process_pool(1))
    pool.submit(os.getpid).result()
    return pool


# --------------------------------------------------------------------------------------------
# the seam merge (a thread) and the writer (a process, or this one)
# --------------------------------------------------------------------------------------------


def _merged(merge: Future, progress) -> MergeResult:
    """The seam merge's result (it runs in a thread), then a step of the progress bar."""
    merged = wait_for(merge, progress)
    progress.advance(1)
    return merged


def _write(writer: ProcessPoolExecutor | None, writes: list[Future], sink: SinkSpec, paths: list[str],
           append: bool, final: bool, progress) -> Callable[[], WriteResult]:
    """Start :func:`~geoseg.vector.write.write_staged` in the ``writer`` process (``lean``: no
    dataframe libraries there); the returned call waits for its result.  Without a writer process,
    the returned call writes."""
    if writer is None:
        return lambda: write_staged(sink, paths, append, final)
    future = writer.submit(write_staged, sink, paths, append, final, True)
    writes.append(future)
    return lambda: wait_for(future, progress)


def _merge_and_write(spec: VectorizeSpec, blocks: list[BlockResult], sink: SinkSpec, merge_pool: ThreadPoolExecutor,
                     writer: ProcessPoolExecutor | None, writes: list[Future],
                     progress) -> tuple[list[WriteResult], MergeResult]:
    """Merge the open pieces across seams while the blocks' final polygons are written, then write the
    merged ones (GeoParquet, which cannot be appended to: one write after the merge).  Empties ``blocks``
    once the merge has them (this process then holds none of their arrays)."""
    # The seam merge runs in a thread while the blocks' final polygons are written, the merged
    # ones after them.  With worker processes, a freshly forked process writes: this one (which
    # holds the merge) never loads the writer's libraries, and the writer loads pyogrio without
    # pandas & co. (see geoseg.vector.write).  (Merging first, then writing, lowered the peak by
    # about 50 MiB on a 10k² raster but took 1.2x the time on an idle 2-core machine.)
    block_paths = [b.staged for b in blocks if b.staged]
    if sink.key == "parquet":  # cannot be appended to: one write after the merge
        merged = _merged(merge_pool.submit(merge_task, spec, *blocks), progress)
        blocks.clear()
        return [_write(writer, writes, sink, block_paths + merged.staged, append=False, final=True,
                       progress=progress)()], merged
    first = _write(writer, writes, sink, block_paths, append=False, final=False, progress=progress)
    merge_future = merge_pool.submit(merge_task, spec, *blocks)
    blocks.clear()
    parts = [first()]  # without a writer process, written here while the merge runs
    merged = _merged(merge_future, progress)
    parts.append(_write(writer, writes, sink, merged.staged, append=True, final=True, progress=progress)())
    return parts, merged


# --------------------------------------------------------------------------------------------
# the outputs: refused early, published at the end
# --------------------------------------------------------------------------------------------


def _check_outputs(output: Path, extra: Sequence[Path], overwrite: bool) -> None:
    if output.is_dir():
        raise OutputError(f"output {output} is a directory; give a file path such as {output / 'landcover.gpkg'}")
    if not overwrite:
        existing = [str(p) for p in (output, *extra) if p.exists()]
        if existing:
            raise OutputExistsError(f"{', '.join(existing)} already exists; pass --overwrite or choose another -o")
    ensure_writable_dir(output.parent, "choose a writable -o path")


def _embed_style(gpkg: Path, layer: str, info: ClassRaster, names: dict[int, str], present: np.ndarray,
                 selected: tuple[int, ...] | None) -> None:
    """QGIS opens the layer styled like the raster (default style in layer_styles), if it has a colour table."""
    categories = style_categories(info, names, present, selected)
    if categories:
        from geoseg.delivery.style import embed_gpkg_style

        embed_gpkg_style(gpkg, layer, categories)


def _record(info: ClassRaster, out: Path, opts: Options, spec: VectorizeSpec, layer: str | None, crs: CRS,
            features: int, rows: list[ClassSummary], seconds: float, messages: list[str]) -> dict:
    """The run's record (``<stem>.summary.json``)."""
    tolerance = opts.tolerance
    return {
        "geoseg_version": __version__,
        "input": os.path.abspath(info.path),
        "output": os.path.abspath(out),
        "format": opts.format.key,
        "layer": layer,
        "crs": crs.to_string(),
        "area_crs": spec.area.description,
        "options": {"band": spec.band, "min_area_m2": opts.min_area_m2, "sieve_pixels": spec.sieve_pixels,
                    "connectivity": spec.connectivity, "simplify": None if tolerance is None else
                    {"value": tolerance[0], "unit": tolerance[1], "pixels": spec.simplify_px},
                    "classes": list(spec.selected) if spec.selected is not None else None,
                    "block_size": spec.block_size},
        "features": features,
        "classes": [r.__dict__ for r in rows],
        "total_area_ha": sum(r.area_ha for r in rows),
        "seconds": round(seconds, 3),
        "warnings": messages,
    }


def _execute(run: RunFolder, spec: VectorizeSpec, opts: Options, info: ClassRaster, tmp_out: Path, layer: str,
             messages: list[str], show_progress: bool | None,
             ) -> tuple[np.ndarray, dict[int, str], list[WriteResult], MergeResult]:
    """Run the blocks, the merge and the writes into ``tmp_out``: (classes present, their names, the writes,
    the merge).  Worker processes, the merge thread and the progress bar end here, either way."""
    fmt = opts.format
    bar = make_progress(len(spec.grid) * (2 if spec.sieve_pixels else 1) + 2, "blocks", show_progress)  # + merge, write
    merge_pool = ThreadPoolExecutor(1, thread_name_prefix="geoseg-merge")
    writes: list[Future] = []
    stack = contextlib.ExitStack()
    try:
        Path(spec.staging).mkdir()
        blocks, writer = _run_blocks(spec, opts, bar, stack)
        if sum(b.valid_pixels for b in blocks) == 0:
            raise EmptySceneError(f"{info.path} has no valid pixel (all nodata); nothing to vectorize")
        present = np.unique(np.concatenate([b.present_values for b in blocks]))
        present, names = present_classes(info, present, spec.selected, messages)
        crs = CRS.from_wkt(spec.area.crs_wkt)
        epsg = crs.to_epsg()
        sink = SinkSpec(str(tmp_out), fmt.key, fmt.driver, layer, spec.area.crs_wkt,
                        f"EPSG:{epsg}" if epsg else crs.to_wkt(), names)
        run.on_failure(lambda: remove_with_sidecars(sink.staged_path))  # (FlatGeobuf's, GeoJSON's GeoPackage)
        parts, merged = _merge_and_write(spec, blocks, sink, merge_pool, writer, writes, bar)
        bar.advance(1)
        return present, names, parts, merged
    except BaseException as exc:
        for f in writes:  # a worker may still be writing: let it end before its file goes
            f.cancel() or f.exception()
        if isinstance(exc, BrokenProcessPool):
            raise worker_lost(bool(writes), opts.workers, opts.block_size) from None
        raise
    finally:
        merge_pool.shutdown(wait=True)  # the merge must end before its staging folder goes (RunFolder's exit)
        stack.close()
        bar.close()


# --------------------------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------------------------


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
    t0 = time.perf_counter()
    opts = check_options(output, format, connectivity, block_size, scheduler, workers, min_area, simplify)
    info = open_vector_source(raster, band)
    model = area_model(info)
    pix_area, pix_side = pixel_size_m(info, model)
    selected = select_classes(classes, info.class_names)
    out = Path(output)
    csv_path, json_path = summary_paths(out)
    _check_outputs(out, (csv_path, json_path), overwrite)
    fmt = opts.format
    layer_name = (layer or out.stem) if fmt.key == "gpkg" else None
    messages: list[str] = []
    # lock=False: vectorize writes one file (and its summary) into any folder, and never left a lock file there
    with RunFolder(out.parent, [out.name, csv_path.name, json_path.name], overwrite, lock=False, check=False) as run:
        # the format's own extension: GDAL's FlatGeobuf driver makes a folder of a path without ".fgb"
        tmp_out = run.stage(out.parent / f".{out.name}.{run.run_id}.part{fmt.extensions[0]}", out)
        tmp_csv, tmp_json = run.temp(csv_path.name), run.temp(json_path.name)
        spec = VectorizeSpec(
            path=os.path.abspath(info.path), band=band, height=info.height, width=info.width,
            block_size=opts.block_size, transform=info.transform, masked=info.masked, connectivity=connectivity,
            sieve_pixels=opts.sieve_pixels(pix_area), simplify_px=opts.simplify_px(pix_side), selected=selected,
            area=model, staging=str(run.work_dir(out.name)),
        )
        present, names, parts, merged = _execute(run, spec, opts, info, tmp_out, layer_name or out.stem, messages,
                                                 progress)
        features = sum(p.count for p in parts)
        rows = summary_rows(class_stats(present, parts), names)
        seconds = time.perf_counter() - t0
        crs = CRS.from_wkt(model.crs_wkt)
        write_summary(tmp_csv, tmp_json, rows,
                      _record(info, out, opts, spec, layer_name, crs, features, rows, seconds, messages))
        if fmt.key == "gpkg" and style:
            _embed_style(tmp_out, layer_name or "", info, names, present, selected)
        run.publish(replace=overwrite)
    for m in messages:
        warnings.warn(m, UserWarning, stacklevel=2)
    return VectorizeResult(
        output=str(out), format=fmt.key, layer=layer_name, features=features, summary=tuple(rows),
        summary_csv=str(csv_path), summary_json=str(json_path), crs=crs.to_string(),
        area_crs=model.description, min_area_m2=opts.min_area_m2, sieve_pixels=spec.sieve_pixels,
        blocks=len(spec.grid), seconds=seconds, warnings=tuple(messages),
        extra=merged.counts(),
    )
