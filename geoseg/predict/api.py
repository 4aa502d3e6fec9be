"""``predict_scene``: the Python API behind ``geoseg predict``.

Validates everything before any work (scene, bands, model, options, output
folder), plans tiles and blocks, runs the dask graph, and only when every block
is written converts the temporary files to COGs and renames them into place.
On any failure or interruption the temporary files are removed and existing
outputs are left untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.errors import NotGeoreferencedWarning

from geoseg._util.execution import check_execution, default_workers
from geoseg._util.progress import make_progress
from geoseg._version import __version__
from geoseg.delivery.sidecars import SIDECARS as SIDECARS  # re-exported (geoseg.predict.SIDECARS)
from geoseg.delivery.sidecars import sidecar_names
from geoseg.errors import EmptySceneError, ParameterError
from geoseg.io.area import pixel_area_m2
from geoseg.io.cloud_detector import DetectorPlan, detect_clouds, is_detect, plan_detection
from geoseg.io.clouds import CloudMask
from geoseg.io.grid import Block, TilePlan, plan_blocks, plan_tiles
from geoseg.io.inputs import gdal_cache_for, open_input, resolve_cloud_mask, source_record
from geoseg.io.journal import BlockJournal
from geoseg.io.output import (
    NODATA,
    Product,
    create_part,
    discard,
    landcover_product,
    percent_product,
)
from geoseg.io.radiometry import InputTransform, decide_transform
from geoseg.io.raster import (
    SceneInfo,
    configure_gdal_cache,
    gdal_config_of_environ,
    parse_datetime,
    release_shared,
    select_bands,
)
from geoseg.io.run import RunFolder
from geoseg.io.sources import SceneSource, canonical_band
from geoseg.io.space import check_free_space, needed_bytes, raster_bytes
from geoseg.model.card import ModelCard
from geoseg.model.export import graph_key
from geoseg.model.package import read_card, resolve
from geoseg.model.runtime import RuntimeChoice
from geoseg.predict.blend import BLEND_MODES
from geoseg.predict.profile import summary
from geoseg.predict.resume import assemble, fingerprint_fields, finished, open_journal
from geoseg.predict.tasks import RunSpec
from geoseg.vector.options import plan_vector_output


def _deliver(out: Path, lc: Product, prob: Product | None, conf: Product | None, card: ModelCard,
             class_pixels: dict[str, int]) -> str:
    """Styles, class table, quicklook, report and STAC Item for the finished products; returns the item path."""
    from geoseg.delivery.sidecars import write_sidecars

    return write_sidecars(out, lc.final, card.classes, probabilities=prob.final if prob else None,
                          confidence=conf.final if conf else None, class_pixels=class_pixels)


@dataclass(frozen=True)
class PredictResult:
    out_dir: str
    landcover: str
    probabilities: str | None
    confidence: str | None
    run_record: str
    run_id: str
    model_id: str
    trained_model: bool
    tiles: int
    class_pixels: dict[str, int]
    nodata_pixels: int
    pixel_area_m2: float | None
    seconds: float
    extra: dict = field(default_factory=dict)
    cloud_pixels: int = 0  # left out by the cloud mask (valid input); they are in nodata_pixels too


def predict_scene(
    scene: str | os.PathLike | None,
    model: str | os.PathLike = "default",
    out_dir: str | os.PathLike = "geoseg-output",
    *,
    bands: Sequence[int] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    blend: str = "cosine",
    batch_size: int | None = None,
    block_size: int = 1024,
    workers: int | None = None,
    scheduler: str = "threads",
    device: str = "auto",
    amp: bool | None = None,
    probabilities: bool = False,
    confidence: bool = False,
    overwrite: bool = False,
    allow_ungeoreferenced: bool = False,
    tta: str = "none",
    vector: str | None = None,
    vector_options: dict | None = None,
    acquired: str | None = None,
    input_scale: float | str | None = None,
    input_offset: float | None = None,
    input_check: bool = True,
    band_files: Mapping[str, str] | None = None,
    cloud_mask: str | os.PathLike | None = "auto",
    progress: bool | None = None,
    runtime: str = "auto",
    precision: str = "f32",
    profile: bool = False,
    client: Any = None,
    resume: bool = True,
) -> PredictResult:
    """Predict a land-cover map of ``scene`` with ``model`` into ``out_dir``.

    ``scene``: a multiband raster (GeoTIFF, VRT...), a Sentinel-2 ``.SAFE`` folder or zip, a STAC Item JSON
    with one asset per band, or a Landsat Collection 2 Level-2 folder (:mod:`geoseg.io.inputs`); or None with
    ``band_files`` (``{"B2": "b2.tif", ...}``, any band aliases) for separate band files.

    ``cloud_mask``: ``"auto"`` honours the product's own mask (L2A SCL, L1C MSK_CLASSI/MSK_CLOUDS, Landsat
    QA_PIXEL; docs/clouds.md), ``"none"`` ignores it, a raster path is the mask (non-zero = masked),
    ``"detect"`` detects the clouds of a Sentinel-2 L1C product with s2cloudless (extra ``geoseg[clouds]``,
    :mod:`geoseg.io.cloud_detector`).  Masked pixels get zero blending weight: nodata in every product,
    :data:`~geoseg.predict.blend.CLOUD` (254) in ``confidence.tif``; ``run.json`` records the mask and
    ``cloud_pixels``.

    Writes ``landcover.tif`` (uint8 class COG, nodata 255, the scene's grid), and
    with ``probabilities``/``confidence`` also ``probabilities.tif`` (one uint8
    percent band per class) and ``confidence.tif`` (max probability, percent),
    plus ``run.json`` (what was run and the class-pixel counts).

    ``tta``: test-time augmentation, ``flips`` (4 passes) or ``d4`` (8 passes): probabilities
    are averaged over flipped/rotated tiles, each mapped back before blending.

    ``vector``: also polygonize the class map into ``landcover.<ext>`` (``gpkg``, ``parquet``,
    ``fgb`` or ``geojson``) with :func:`geoseg.vectorize.vectorize_raster`; ``vector_options``
    are passed on to it (e.g. ``{"min_area": "0.5ha", "simplify": 10}``).

    ``acquired``: the scene's acquisition date/time (ISO 8601 or ``YYYYMMDD``; a date alone is midnight
    UTC); by default read from the scene's tags (:data:`geoseg.raster.ACQUISITION_TAGS`).  It is written
    into every product (tag ``ACQUISITION_DATETIME``), ``run.json`` and the STAC item's ``datetime``.

    ``input_scale``/``input_offset``: map the scene's DN to the model's (``dn * scale + offset``), or
    ``input_scale="auto"`` to apply what the statistics check detects; by default the scene's band
    scale/offset metadata is used, else the check refuses values that do not look like the model's training
    data (:mod:`geoseg.io.radiometry`); ``input_check=False`` skips it.  Recorded in ``run.json``.

    ``progress=None`` shows a progress bar only on an interactive terminal.

    ``runtime``: ``auto`` (OpenVINO on an x86 CPU where installed, else ONNX Runtime, else torch; torch on
    CUDA), ``torch``, ``onnxruntime`` or ``openvino``; ``precision``: ``f32`` (every runtime reproduces torch
    eager), ``bf16`` (OpenVINO or torch on a CPU with native BF16) or ``auto`` (bf16 where the CPU has
    it, else f32).  Decided, and the runtime's graph exported and
    cached, before any work (docs/runtimes.md); recorded in ``run.json`` under ``runtime``.  ``profile``:
    time per stage summed over tasks, in ``run.json`` and ``extra["profile"]``
    (:mod:`geoseg.predict.profile`).

    ``client``: an existing ``distributed.Client`` (of a LocalCluster, dask-jobqueue, dask-kubernetes or Coiled
    cluster) to run the tasks on, instead of ``scheduler``; left open.  Workers on other hosts need the output
    folder on a shared file system (docs/scale.md).  ``resume``: finished blocks of an earlier, killed run into
    ``out_dir`` with the same inputs, model and options are kept (``OUT/.geoseg-journal/``) and not computed
    again; False starts afresh.
    """
    t0 = time.perf_counter()
    configure_gdal_cache()
    job = _plan(scene, model, out_dir, bands=bands, tile_size=tile_size, overlap=overlap, blend=blend,
                batch_size=batch_size, block_size=block_size, workers=workers, scheduler=scheduler, device=device,
                amp=amp, probabilities=probabilities, confidence=confidence,
                allow_ungeoreferenced=allow_ungeoreferenced, tta=tta, vector=vector, vector_options=vector_options,
                acquired=acquired, input_scale=input_scale, input_offset=input_offset, input_check=input_check,
                band_files=band_files, runtime=runtime, precision=precision, profile=profile, cloud_mask=cloud_mask,
                client=client)
    out = job.out
    check_free_space(out, _space_needed(job), "the outputs")  # a full disk: one line and exit 5, before any work
    with RunFolder(out, job.names, overwrite) as run:  # one run per folder; removes a killed run's temporaries
        if job.detect is not None:  # --cloud-mask detect: a pre-pass writes the mask into the run's scratch folder
            job = replace(job, cloud_mask=detect_clouds(job.detect, run.work_dir("clouds")))
        products = _products(job, run.run_id)
        run.on_failure(lambda: discard(products))
        spec = _spec(job, run.run_id)
        journal = open_journal(out, fingerprint_fields(spec, job.info, job.tile_size, graph_key(job.model_path)),
                               resume)
        run.on_failure(lambda: None if journal.has_blocks() else journal.remove())  # kept for a rerun to resume
        spec = dataclasses.replace(spec, journal_dir=str(journal.dir))
        t_graph = time.perf_counter()
        hist, stage_s, cloud_pixels, reused, n_tasks = _execute(job, spec, products, progress, journal, client)
        t_graph = time.perf_counter() - t_graph
        nodata = int(hist[NODATA])
        class_pixels = {c.name: int(hist[c.value]) for c in job.card.classes}
        seconds = time.perf_counter() - t0
        record = _record(job, run.run_id, products, class_pixels, nodata, seconds)
        record["cloud_pixels"] = cloud_pixels
        record["resumed_blocks"] = reused
        # All blocks are written: build every COG first (from the journal's block files), then move them all into
        # place.
        t_cog = time.perf_counter()
        for p, cog in zip(products, assemble(journal, spec, products, job.blocks), strict=True):
            run.stage(cog, p.final)
        if stage_s is not None:
            record["profile"] = summary({**stage_s, "cog": time.perf_counter() - t_cog}, t_graph, n_tasks)
        run.temp("run.json").write_text(json.dumps(record, indent=2) + "\n")
        run.publish()
        journal.remove()
        lc = products[0]
        prob = next((p for p in products if p.name == "probabilities"), None)
        conf = next((p for p in products if p.name == "confidence"), None)
        extra: dict = {"profile": record["profile"]} if "profile" in record else {}
        extra["resumed_blocks"] = reused
        if job.vector_path is not None:
            from geoseg.vector.api import vectorize_raster

            # forked worker processes where safe, else threads (see geoseg.vector.workers.fork_is_safe); a tcp://
            # cluster is not used for this step
            vres = vectorize_raster(lc.final, job.vector_path, format=vector, overwrite=True, workers=job.workers,
                                    scheduler="synchronous" if job.scheduler == "synchronous" else "processes",
                                    progress=progress, **job.vector_options)
            extra["vector"] = vres.output
            extra["vector_features"] = vres.features
        extra["item"] = _deliver(out, lc, prob, conf, job.card, class_pixels)
        return PredictResult(
            out_dir=str(out),
            landcover=lc.final,
            probabilities=prob.final if prob else None,
            confidence=conf.final if conf else None,
            run_record=str(out / "run.json"),
            run_id=run.run_id,
            model_id=job.card.id,
            trained_model=job.card.trained,
            tiles=len(job.plan),
            class_pixels=class_pixels,
            nodata_pixels=nodata,
            cloud_pixels=cloud_pixels,
            pixel_area_m2=record["pixel_area_m2"],
            seconds=seconds,
            extra=extra,
        )


@dataclass(frozen=True)
class _Job:
    """Everything a prediction run needs, validated before any work is done."""

    out: Path
    names: list[str]
    model_path: Path
    card: ModelCard
    info: SceneInfo
    source: SceneSource | None
    band_idx: list[int]
    acquired: str | None
    acquired_from: str | None
    tile_size: int
    overlap: int
    blend: str
    plan: TilePlan
    blocks: list[Block]
    scheduler: str
    workers: int
    device: str
    amp: bool | None
    batch_size: int
    torch_threads: int
    tta: str
    block_size: int
    probabilities: bool
    confidence: bool
    vector_path: Path | None
    vector_options: dict
    radiometry: InputTransform
    cloud_mask: CloudMask | None
    engine: RuntimeChoice  # runtime, precision, device and graph, decided once
    profile: bool = False
    detect: DetectorPlan | None = None  # --cloud-mask detect: what the pre-pass reads (cloud_mask is then None)


def _plan(scene: str | os.PathLike | None, model: str | os.PathLike, out_dir: str | os.PathLike, *,
          bands: Sequence[int] | None, tile_size: int | None, overlap: int | None, blend: str,
          batch_size: int | None, block_size: int, workers: int | None, scheduler: str, device: str,
          amp: bool | None, probabilities: bool, confidence: bool, allow_ungeoreferenced: bool, tta: str,
          vector: str | None, vector_options: dict | None, acquired: str | None,
          input_scale: float | str | None = None, input_offset: float | None = None, input_check: bool = True,
          band_files: Mapping[str, str] | None = None, runtime: str = "auto", precision: str = "f32",
          profile: bool = False, cloud_mask: str | os.PathLike | None = "auto", client: Any = None) -> _Job:
    """Validate the model, scene, bands and every option, and plan tiles and blocks (no output yet)."""
    from geoseg.model.runtime import TTA_MODES, choose_runtime, prepare_graph  # torch only for the torch runtime

    model_path = resolve(model)
    card: ModelCard = read_card(model_path)
    # a product is stacked with the model's bands (when the card names them canonically); --bands picks by number
    wanted = card.bands if bands is None and all(canonical_band(b) for b in card.bands) else None
    info, source = open_input(scene, band_files=band_files, wanted=wanted,
                              allow_ungeoreferenced=allow_ungeoreferenced)
    band_idx = select_bands(info, card.bands, bands)
    radiometry = _radiometry(info, card, band_idx, input_scale, input_offset, input_check)
    detect = plan_detection(scene, band_files, info, source) if is_detect(cloud_mask) else None
    clouds = None if detect is not None else resolve_cloud_mask(cloud_mask, info, source)
    when, acquired_from = _acquisition(info, acquired)
    if blend not in BLEND_MODES:
        raise ParameterError(f"unknown blend mode {blend!r}; choose one of {', '.join(BLEND_MODES)}")
    tile_size = card.tile_size if tile_size is None else int(tile_size)
    overlap = card.overlap if overlap is None else int(overlap)
    plan = plan_tiles(info.height, info.width, tile_size, overlap, card.output_stride)
    blocks = plan_blocks(info.height, info.width, block_size)
    if tta not in TTA_MODES:
        raise ParameterError(f"unknown --tta {tta!r}; choose one of {', '.join(TTA_MODES)}")
    ex = check_execution(scheduler, workers)
    engine = choose_runtime(runtime, device, precision, amp)
    if batch_size is None:  # CPU: the measured size per runtime and precision (small); GPU: fill it
        batch_size = engine.batch_size
    if batch_size < 1:
        raise ParameterError(f"batch size {batch_size} must be >= 1; use e.g. --batch-size 2")
    # Threads share one model and run one forward at a time with every core (intra-op); separate
    # processes each get their share of the cores so they never oversubscribe them.
    if engine.device_type != "cpu":
        torch_threads = 1
    elif client is None and (ex.scheduler == "threads" or ex.scheduler == "synchronous"):
        torch_threads = default_workers()
    else:
        torch_threads = max(1, default_workers() // ex.workers)
    out = Path(out_dir)
    names, vector_path, vector_options = _output_names(out, probabilities, confidence, vector, vector_options)
    engine = prepare_graph(model_path, engine)  # last: every option is valid; workers only load the graph
    return _Job(out=out, names=names, model_path=model_path, card=card, info=info, source=source,
                band_idx=list(band_idx),
                acquired=when, acquired_from=acquired_from, tile_size=tile_size, overlap=overlap, blend=blend,
                plan=plan, blocks=blocks, scheduler=ex.scheduler, workers=ex.workers, device=engine.device, amp=amp,
                batch_size=batch_size, torch_threads=torch_threads, tta=tta, block_size=block_size,
                probabilities=probabilities, confidence=confidence, vector_path=vector_path,
                vector_options=vector_options, radiometry=radiometry, engine=engine, profile=profile,
                cloud_mask=clouds, detect=detect)


def _radiometry(info: SceneInfo, card: ModelCard, band_idx: Sequence[int], input_scale: float | str | None,
                input_offset: float | None, input_check: bool) -> InputTransform:
    """How the scene's DN become the card's (:func:`geoseg.io.radiometry.decide_transform`), with warnings for
    an untrained model and a product level other than the card's."""
    if not card.trained:
        warnings.warn(f"model {card.id} is untrained (random weights): its classes are meaningless; train it "
                      "(geoseg train) or use a trained package", UserWarning, stacklevel=4)
    spec = card.input
    means = card.normalization.a if spec is not None and card.normalization.kind == "meanstd" else None
    stds = card.normalization.b if means is not None else None
    transform = decide_transform(info.gdal_name, band_idx, card.bands, means=means, stds=stds,
                                 dn_scale=spec.dn_scale if spec else None, dn_offset=spec.dn_offset if spec else 0.0,
                                 input_scale=input_scale, input_offset=input_offset, check=input_check,
                                 label=info.path)
    if spec is not None and spec.sensor and info.sensor and info.sensor.lower() != spec.sensor.lower():
        warnings.warn(f"{info.path} is a {info.sensor} scene but model {card.id} was trained on {spec.sensor}: its "
                      f"bands are matched by name ({','.join(card.bands)}) but their spectral responses differ; "
                      "expect class shifts", UserWarning, stacklevel=4)
    level = info.level
    if spec is not None and spec.level and level and level.upper() != spec.level.upper():
        warnings.warn(f"{info.path} is a {level} product but model {card.id} was trained on {spec.level}: "
                      "expect class shifts (e.g. surface reflectance is darker than top-of-atmosphere)",
                      UserWarning, stacklevel=4)
    return transform


def _acquisition(info: SceneInfo, acquired: str | None) -> tuple[str | None, str | None]:
    """(acquisition date/time, where it came from): ``--acquired`` if given, else the scene's tags."""
    if acquired is None:
        return info.acquired, (f"input tag {info.acquired_tag}" if info.acquired else None)
    when = parse_datetime(acquired)
    if when is None:
        raise ParameterError(f"--acquired {acquired!r} is not a date or time; give e.g. 2016-09-27 or "
                             "2016-09-27T08:17:13Z")
    return when, "--acquired"


def _output_names(out: Path, probabilities: bool, confidence: bool, vector: str | None,
                  vector_options: dict | None) -> tuple[list[str], Path | None, dict]:
    """The final names the run will write (checked before the inference), the vector output and its options."""
    names = ["landcover.tif", "run.json"]
    names += ["probabilities.tif"] if probabilities else []
    names += ["confidence.tif"] if confidence else []
    names += sidecar_names(names)
    vector_path, options = plan_vector_output(out, vector, vector_options)
    if vector_path is not None:
        names.append(vector_path.name)
    return names, vector_path, options


def _space_needed(job: _Job) -> int:
    """Upper bound of the bytes the run's rasters take at the peak (:func:`geoseg.io.space.needed_bytes`)."""
    counts = [1] + ([len(job.card.classes)] if job.probabilities else []) + ([1] if job.confidence else [])
    return needed_bytes(raster_bytes(job.info.width, job.info.height, n) for n in counts)  # uint8 products


def _products(job: _Job, run_id: str) -> list[Product]:
    """The rasters this run writes: landcover, then probabilities and confidence if asked for."""
    out, card = str(job.out), job.card
    products = [landcover_product(out, run_id, card.classes, card.id)]
    if job.probabilities:
        products.append(percent_product(out, run_id, "probabilities", [c.name for c in card.classes], card.id))
    if job.confidence:
        products.append(percent_product(out, run_id, "confidence", ["confidence (max class probability)"],
                                        card.id))
    if job.acquired:
        for p in products:
            p.tags["ACQUISITION_DATETIME"] = job.acquired
    return products


def _spec(job: _Job, run_id: str) -> RunSpec:
    """What every task of the run receives (paths and numbers only)."""
    info = job.info
    return RunSpec(
        scene_path=info.gdal_name,
        bands=tuple(job.band_idx),
        # A plain nodata value is tested on the values already read; real masks (alpha, mask band) are read.
        use_masks=info.per_dataset_mask and not info.nodata_only_mask,
        input_nodata=info.nodata if info.nodata_only_mask else (
            None if info.per_dataset_mask else job.card.input_nodata),
        model_path=str(job.model_path.resolve()),
        device=job.device,
        amp=job.amp,
        torch_threads=job.torch_threads,
        batch_size=job.batch_size,
        overlap=job.overlap,
        blend=job.blend,
        height=info.height,
        width=info.width,
        block_size=job.block_size,
        class_values=tuple(job.card.class_values),
        probabilities=job.probabilities,
        confidence=job.confidence,
        tta=job.tta,
        input_scale=None if job.radiometry.is_identity else job.radiometry.scale,
        input_offset=None if job.radiometry.is_identity else job.radiometry.offset,
        runtime=job.engine.runtime,
        precision=job.engine.precision,
        profile=job.profile,
        cloud_mask=job.cloud_mask,
        run_key=run_id,
        gdal_cache_bytes=gdal_cache_for(info),
        gdal_config=gdal_config_of_environ(),
    )


def _execute(job: _Job, spec: RunSpec, products: list[Product], progress: bool | None, journal: BlockJournal,
             client: Any = None) -> tuple[np.ndarray, dict[str, float] | None, int, int, int]:
    """Create the products' templates and run the dask graph of the blocks the journal lacks; the class
    histogram (256 bins), with ``job.profile`` the tasks' stage seconds, the cloud pixels, the blocks reused and
    the tasks run (tile batches + blocks)."""
    from geoseg.predict import graph  # dask

    info = job.info
    todo, hist, cloud_pixels = finished(journal, job.blocks)
    tiles = list(job.plan)
    n_tiles = len(graph.tiles_for(spec, tiles, todo))
    bar = make_progress(n_tiles, "tiles", progress)
    with warnings.catch_warnings():
        if not info.georeferenced:  # accepted with allow_ungeoreferenced: rasterio's warnings are noise now
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for p in products:
            create_part(p, info)
        try:
            h, stage_s, c = graph.run(spec, tiles, todo, job.scheduler, job.workers, bar, client)
        finally:
            bar.close()
            release_shared()  # the scene this process held open for the run's tasks
    hist += h
    cloud_pixels += c
    if int(hist[NODATA]) == info.width * info.height:
        journal.remove()  # a result that no rerun changes
        if cloud_pixels and job.cloud_mask is not None:
            raise EmptySceneError(f"{info.path}: every valid pixel is masked as cloud ({job.cloud_mask.describe()}"
                                  f" of {job.cloud_mask.origin}); nothing to map. Pass --cloud-mask none to map it "
                                  "anyway")
        raise EmptySceneError(
            f"{info.path} has no valid pixel in bands {','.join(map(str, job.band_idx))} "
            "(all nodata); check the scene, its nodata value, or --bands"
        )
    return hist, stage_s, cloud_pixels, len(job.blocks) - len(todo), -(-n_tiles // spec.batch_size) + len(todo)


def _record(job: _Job, run_id: str, products: list[Product], class_pixels: dict[str, int], nodata: int,
            seconds: float) -> dict:
    """``run.json``: what was run, on what, with which options, and the class-pixel counts."""
    info, card = job.info, job.card
    return {
        "geoseg_version": __version__,
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scene": info.path if job.source is not None and not os.path.exists(info.path) else os.path.abspath(info.path),
        "source": None if job.source is None else source_record(job.source),
        "acquired": job.acquired,
        "acquired_from": job.acquired_from,
        "bands": job.band_idx,
        "radiometry": job.radiometry.to_json(),
        "cloud_mask": None if job.cloud_mask is None else job.cloud_mask.to_json(),
        "model": {"id": card.id, "version": card.version, "path": str(job.model_path.resolve()),
                  "trained": card.trained, "architecture": card.architecture, "encoder": card.encoder},
        "classes": [asdict(c) for c in card.classes],
        "grid": {"crs": info.crs_wkt, "transform": list(info.transform), "width": info.width,
                 "height": info.height},
        "options": {"tile_size": job.tile_size, "overlap": job.overlap, "blend": job.blend,
                    "batch_size": job.batch_size, "block_size": job.block_size, "workers": job.workers,
                    "scheduler": job.scheduler, "device": job.device, "torch_threads": job.torch_threads,
                    "tta": job.tta, "runtime": job.engine.requested},
        "runtime": job.engine.to_json(),
        "tiles": len(job.plan),
        "computed_pixels": job.plan.computed_pixels,
        "class_pixels": class_pixels,
        "nodata_pixels": nodata,
        "pixel_area_m2": pixel_area_m2(info.crs_wkt, info.transform, info.width, info.height),
        "outputs": {p.name: os.path.basename(p.final) for p in products},
        "seconds": round(seconds, 3),
        "host": platform.node(),
    }
