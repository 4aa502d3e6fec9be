"""``mosaic_scenes``: the Python API behind ``geoseg mosaic``.

Class maps (and confidence/probabilities) of scenes predicted in their own CRSs and grids are read onto one
explicit grid (:mod:`geoseg.mosaic.grid`) block by block, nearest neighbour, and where scenes overlap a rule
chooses (:mod:`geoseg.mosaic.rules`: the highest confidence by default).  One dask task per block
(:func:`geoseg._util.execution.run_each`: threads, processes or ``tcp://``) streams its block into the
temporary GeoTIFFs, so memory does not grow with the mosaic.  Then the same products as ``geoseg predict``
(:class:`geoseg.io.run.RunFolder`: COGs renamed into place only when everything succeeded): ``landcover.tif``,
``confidence.tif`` / ``probabilities.tif`` when every input has them, ``run.json``, optionally the polygons
(:func:`geoseg.vector.api.vectorize_raster` on the mosaic, so they are seamless across scene borders), and
the sidecars (:func:`geoseg.delivery.sidecars.write_sidecars`: styles, class table, quicklook, report and
the STAC Item, with ``derived_from`` links to the inputs' Items).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._util.execution import Execution, check_execution
from geoseg._version import __version__
from geoseg.delivery.sidecars import sidecar_names
from geoseg.errors import EmptySceneError
from geoseg.io.area import pixel_area_m2
from geoseg.io.codes import ClassInfo
from geoseg.io.grid import BlockGrid, check_block_size
from geoseg.io.output import NODATA, Product, landcover_product, percent_product
from geoseg.io.warp import Grid
from geoseg.mosaic.grid import footprint, plan_grid
from geoseg.mosaic.inputs import MosaicInput, check_same_model, collect_inputs
from geoseg.mosaic.rules import check_rule
from geoseg.mosaic.tasks import BlockJob, MosaicSpec, Source, mosaic_block_task
from geoseg.vector.options import plan_vector_output

__all__ = ["mosaic_scenes", "MosaicResult"]


@dataclass(frozen=True)
class MosaicResult:
    out_dir: str
    landcover: str
    confidence: str | None
    probabilities: str | None
    run_record: str
    item: str
    run_id: str
    rule: str
    scenes: tuple[str, ...]  # the inputs' ids, in rule order
    scene_pixels: dict[str, int]  # pixels of the mosaic each input gave
    class_pixels: dict[str, int]
    nodata_pixels: int
    width: int
    height: int
    crs: str
    seconds: float
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Job:
    """Everything a mosaic run needs, checked before any work."""

    out: Path
    inputs: list[MosaicInput]
    grid: Grid
    rule: str
    block_size: int
    execution: Execution
    confidence: bool
    probabilities: bool
    names: list[str]
    vector: str | None
    vector_path: Path | None
    vector_options: dict[str, Any]

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        return self.inputs[0].classes


def _plan(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, crs: str | None, res: Any,
          bounds: Any, like: str | os.PathLike | None, rule: str, block_size: int, workers: int | None,
          scheduler: str, vector: str | None, vector_options: dict | None) -> _Job:
    """Validate every option and input, decide the grid (no output yet)."""
    block_size = check_block_size(block_size)
    execution = check_execution(scheduler, workers)
    scenes = collect_inputs(inputs)
    check_same_model(scenes)
    no_conf = next((s.folder for s in scenes if s.confidence is None), None)
    rule = check_rule(rule, no_conf is None, no_conf)
    grid = plan_grid(scenes, crs=crs, res=res, bounds=bounds, like=like)
    out = Path(out_dir)
    confidence = no_conf is None
    probabilities = all(s.probabilities for s in scenes)
    rasters = ["landcover.tif"] + (["confidence.tif"] if confidence else []) + (
        ["probabilities.tif"] if probabilities else [])
    vector_path, opts = plan_vector_output(out, vector, vector_options)
    names = rasters + ["run.json"] + sidecar_names(rasters) + ([vector_path.name] if vector_path else [])
    return _Job(out, scenes, grid, rule, block_size, execution, confidence, probabilities, names, vector,
                vector_path, opts)


def _products(job: _Job, run_id: str) -> list[Product]:
    """landcover, then confidence and probabilities when every input has them (predict's products)."""
    out, model_id = str(job.out), str(job.inputs[0].model.get("id", ""))
    products = [landcover_product(out, run_id, job.classes, model_id)]
    if job.confidence:
        products.append(percent_product(out, run_id, "confidence", ["confidence (max class probability)"], model_id))
    if job.probabilities:
        products.append(percent_product(out, run_id, "probabilities", [c.name for c in job.classes], model_id))
    for p in products:
        p.tags.update(GEOSEG_MOSAIC_RULE=job.rule, GEOSEG_MOSAIC_SCENES=str(len(job.inputs)))
    return products


def _block_jobs(job: _Job) -> list[BlockJob]:
    """Every block of the grid with the inputs whose footprint touches it (in rule order)."""
    feet = [footprint(s, job.grid) for s in job.inputs]
    jobs = []
    for w in BlockGrid(job.grid.height, job.grid.width, job.block_size).windows():
        jobs.append(BlockJob(w, tuple(i for i, f in enumerate(feet) if f is not None and f.intersection(w))))
    return jobs


def _stack(s: MosaicInput) -> str:
    """The input's class map and confidence as one two-band VRT (they share the scene's grid)."""
    from geoseg.io.sources.vrt import BandFile, stack_vrt

    bands = [BandFile(name, path, nodata=NODATA, resampling="nearest")
             for name, path in (("landcover", s.landcover), ("confidence", s.confidence or ""))]
    return stack_vrt(bands, {}, s.folder)


def _execute(job: _Job, products: list[Product], progress: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Create the temporaries and run one task per block into them; (class histogram, pixels per input)."""
    from geoseg._util.execution import run_each
    from geoseg._util.progress import make_progress
    from geoseg.io.output import create_part

    part = {p.name: p.part for p in products}
    spec = MosaicSpec(
        sources=tuple(Source(s.landcover, s.confidence if job.confidence else None,
                             s.probabilities if job.probabilities else None, _stack(s) if job.confidence else None)
                      for s in job.inputs),
        grid=job.grid, rule=job.rule, landcover_part=part["landcover"], confidence_part=part.get("confidence"),
        probabilities_part=part.get("probabilities"), n_probability_bands=len(job.classes))
    for p in products:
        create_part(p, job.grid)
    blocks = _block_jobs(job)
    bar = make_progress(len(blocks), "blocks", progress)
    hist, won = np.zeros(256, np.int64), np.zeros(len(job.inputs), np.int64)
    try:
        for h, w in run_each(mosaic_block_task, blocks, "mosaic-block", spec, job.execution, bar):
            hist += h
            for i, n in w.items():
                won[i] += n
    finally:
        bar.close()
    if int(hist[NODATA]) == job.grid.width * job.grid.height:
        raise EmptySceneError("no input has a valid pixel on the mosaic grid; check --bounds/--like (in the grid's "
                              "CRS) and the inputs")
    return hist, won


def _record(job: _Job, run_id: str, products: list[Product], hist: np.ndarray, won: np.ndarray,
            seconds: float) -> dict[str, Any]:
    """``run.json`` in predict's shape (the report and the STAC Item read it) plus ``mosaic``: rule and inputs."""
    g, first = job.grid, job.inputs[0]
    return {
        "geoseg_version": __version__,
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scene": None,
        "acquired": None,
        "model": first.model,
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in job.classes],
        "grid": {"crs": g.crs_wkt, "transform": list(g.transform), "width": g.width, "height": g.height},
        "options": {"rule": job.rule, "block_size": job.block_size, "workers": job.execution.workers,
                    "scheduler": job.execution.scheduler},
        "class_pixels": {c.name: int(hist[c.value]) for c in job.classes},
        "nodata_pixels": int(hist[NODATA]),
        "pixel_area_m2": pixel_area_m2(g.crs_wkt, g.transform, g.width, g.height),
        "outputs": {p.name: os.path.basename(p.final) for p in products},
        "mosaic": {"rule": job.rule, "inputs": [
            {"id": s.id, "folder": os.path.abspath(s.folder), "run_id": s.run_id, "acquired": s.acquired,
             "crs": s.crs_wkt, "item": s.item, "pixels": int(n)} for s, n in zip(job.inputs, won)]},
        "seconds": round(seconds, 3),
        "host": platform.node(),
    }


def _inputs_section(record: dict[str, Any]) -> tuple[str, str]:
    """The report's table of the mosaic's inputs (in rule order, with the pixels each gave)."""
    from rasterio.crs import CRS

    from geoseg.delivery.report import html_table

    rows = []
    for i in record["mosaic"]["inputs"]:
        epsg = CRS.from_wkt(i["crs"]).to_epsg()
        rows.append((i["id"], f"EPSG:{epsg}" if epsg else "custom", i["acquired"] or "", f"{i['pixels']:,}",
                     i["folder"]))
    return (f"Mosaic inputs (rule: {record['mosaic']['rule']})",
            html_table(["scene", "CRS", "acquired", "pixels given", "folder"], rows, numeric=(3,),
                       table_id="mosaic-inputs"))


def mosaic_scenes(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    crs: str | None = None,
    res: str | float | Sequence[float] | None = None,
    bounds: str | Sequence[float] | None = None,
    like: str | os.PathLike | None = None,
    rule: str = "confidence",
    block_size: int = 1024,
    workers: int | None = None,
    scheduler: str = "threads",
    overwrite: bool = False,
    vector: str | None = None,
    vector_options: dict | None = None,
    progress: bool | None = None,
) -> MosaicResult:
    """Mosaic the predictions in ``inputs`` (``geoseg predict`` output folders, or batch folders with
    ``index.json``: their done scenes) into ``out_dir`` on one grid.

    Grid: ``like`` (a raster's grid), or ``crs`` (default: the first input's) + ``res`` (default: the pixel
    size of the first input in that CRS) + ``bounds`` (``xmin,ymin,xmax,ymax`` in ``crs``; default: the union
    of the inputs' footprints), corners snapped outward to multiples of ``res``.  ``rule``: ``confidence``
    (highest confidence wins, ties to the earlier input; needs every input's ``confidence.tif``), ``first``
    or ``last`` (in the order given).  Masked pixels (nodata, cloud) never beat observed ones.  ``vector``:
    also polygonize the mosaic into ``landcover.<ext>``; ``vector_options`` go to
    :func:`geoseg.vector.api.vectorize_raster` (``min_area``, ``simplify``).
    """
    from geoseg.delivery.sidecars import write_sidecars
    from geoseg.io.output import build_cog, discard
    from geoseg.io.raster import configure_gdal_cache
    from geoseg.io.run import RunFolder

    t0 = time.perf_counter()
    configure_gdal_cache()
    job = _plan(inputs, out_dir, crs=crs, res=res, bounds=bounds, like=like, rule=rule, block_size=block_size,
                workers=workers, scheduler=scheduler, vector=vector, vector_options=vector_options)
    with RunFolder(job.out, job.names, overwrite) as run:
        products = _products(job, run.run_id)
        run.on_failure(lambda: discard(products))
        hist, won = _execute(job, products, progress)
        for p in products:
            run.stage(build_cog(p), p.final)
        record = _record(job, run.run_id, products, hist, won, time.perf_counter() - t0)
        run.temp("run.json").write_text(json.dumps(record, indent=2) + "\n")
        run.publish()
        by_name = {p.name: p.final for p in products}
        extra: dict[str, Any] = {}
        if job.vector_path is not None:
            from geoseg.vector.api import vectorize_raster

            ex = job.execution
            vres = vectorize_raster(by_name["landcover"], job.vector_path, format=job.vector, overwrite=True,
                                    workers=ex.workers, progress=progress,
                                    scheduler="synchronous" if ex.scheduler == "synchronous" else "processes",
                                    **job.vector_options)
            extra.update(vector=vres.output, vector_features=vres.features)
        item = write_sidecars(job.out, by_name["landcover"], job.classes,
                              probabilities=by_name.get("probabilities"), confidence=by_name.get("confidence"),
                              class_pixels=record["class_pixels"], sections=[_inputs_section(record)],
                              title=f"Land-cover mosaic of {len(job.inputs)} scenes")
    return MosaicResult(
        out_dir=str(job.out), landcover=by_name["landcover"], confidence=by_name.get("confidence"),
        probabilities=by_name.get("probabilities"), run_record=str(job.out / "run.json"), item=item,
        run_id=run.run_id, rule=job.rule, scenes=tuple(s.id for s in job.inputs),
        scene_pixels={s.id: int(n) for s, n in zip(job.inputs, won)}, class_pixels=record["class_pixels"],
        nodata_pixels=record["nodata_pixels"], width=job.grid.width, height=job.grid.height,
        crs=job.grid.crs_wkt, seconds=time.perf_counter() - t0, extra=extra)
