"""``predict_scene``: the Python API behind ``geoseg predict``.

Validates everything before any work (scene, bands, model, options, output
folder), plans tiles and blocks, runs the dask graph, and only when every block
is written converts the temporary files to COGs and renames them into place.
On any failure or interruption the temporary files are removed and existing
outputs are left untouched.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from rasterio.errors import NotGeoreferencedWarning

from geoseg._util.execution import check_execution, default_workers
from geoseg._util.progress import make_progress
from geoseg._version import __version__
from geoseg.errors import EmptySceneError, ParameterError
from geoseg.io.grid import plan_blocks, plan_tiles
from geoseg.io.output import (
    NODATA,
    Product,
    build_cog,
    create_part,
    discard,
    landcover_product,
    percent_product,
)
from geoseg.io.raster import configure_gdal_cache, open_scene, parse_datetime, pixel_area_m2, select_bands
from geoseg.io.run import RunFolder
from geoseg.model.card import ModelCard
from geoseg.model.package import read_card, resolve
from geoseg.predict.blend import BLEND_MODES

#: Files written beside the rasters for GIS users (see docs/delivery.md).
SIDECARS = ["landcover.qml", "landcover.tif.aux.xml", "quicklook.png", "report.html", "item.json"]


def _deliver(out: Path, lc: Product, prob: Product | None, conf: Product | None, card: ModelCard,
             class_pixels: dict[str, int], vres) -> str:
    """Styles, class table, quicklook and STAC Item for the finished products; returns the item path."""
    from geoseg.delivery.quicklook import write_quicklook
    from geoseg.delivery.rat import write_rat
    from geoseg.delivery.report import write_report
    from geoseg.delivery.stac import write_stac_item
    from geoseg.delivery.style import write_percent_qml, write_qml

    write_qml(lc.final, card.classes)
    write_rat(lc.final, card.classes)
    if prob:
        write_percent_qml(prob.final, label="probability")
    if conf:
        write_percent_qml(conf.final, label="confidence")
    write_quicklook(lc.final, out / "quicklook.png", card.classes, class_pixels=class_pixels)
    write_report(out, pending=["item.json"])
    return write_stac_item(out)  # last: it records checksums of every other file


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


def predict_scene(
    scene: str | os.PathLike,
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
    progress: bool | None = None,
) -> PredictResult:
    """Predict a land-cover map of ``scene`` with ``model`` into ``out_dir``.

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

    ``progress=None`` shows a progress bar only on an interactive terminal.
    """
    from geoseg.model.runtime import TTA_MODES, select_device  # torch
    from geoseg.predict import graph  # dask
    from geoseg.predict.tasks import RunSpec

    t0 = time.perf_counter()
    configure_gdal_cache()
    model_path = resolve(model)
    card: ModelCard = read_card(model_path)
    info = open_scene(scene, allow_ungeoreferenced=allow_ungeoreferenced)
    band_idx = select_bands(info, card.bands, bands)
    if acquired is not None:
        when = parse_datetime(acquired)
        if when is None:
            raise ParameterError(f"--acquired {acquired!r} is not a date or time; give e.g. 2016-09-27 or "
                                 "2016-09-27T08:17:13Z")
        acquired_from = "--acquired"
    else:
        when, acquired_from = info.acquired, (f"input tag {info.acquired_tag}" if info.acquired else None)
    if blend not in BLEND_MODES:
        raise ParameterError(f"unknown blend mode {blend!r}; choose one of {', '.join(BLEND_MODES)}")
    tile_size = card.tile_size if tile_size is None else int(tile_size)
    overlap = card.overlap if overlap is None else int(overlap)
    plan = plan_tiles(info.height, info.width, tile_size, overlap, card.output_stride)
    blocks = plan_blocks(info.height, info.width, block_size)
    if tta not in TTA_MODES:
        raise ParameterError(f"unknown --tta {tta!r}; choose one of {', '.join(TTA_MODES)}")
    ex = check_execution(scheduler, workers)
    scheduler, n_workers = ex.scheduler, ex.workers
    dev = select_device(device)
    if batch_size is None:  # CPU: small batches keep activation memory low at no speed cost; GPU: fill it
        batch_size = 2 if dev.type == "cpu" else 8
    if batch_size < 1:
        raise ParameterError(f"batch size {batch_size} must be >= 1; use e.g. --batch-size 2")
    # Threads share one model and run one forward at a time with every core (intra-op); separate
    # processes each get their share of the cores so they never oversubscribe them.
    if dev.type != "cpu":
        torch_threads = 1
    elif scheduler == "threads" or scheduler == "synchronous":
        torch_threads = default_workers()
    else:
        torch_threads = max(1, default_workers() // n_workers)

    out = Path(out_dir)
    names = ["landcover.tif", "run.json"]
    names += ["probabilities.tif"] if probabilities else []
    names += ["confidence.tif"] if confidence else []
    names += SIDECARS + [f"{n[:-4]}.qml" for n in names if n in ("probabilities.tif", "confidence.tif")]
    vector_options = {k: v for k, v in (vector_options or {}).items() if v is not None}
    if vector is not None:
        from geoseg.vector.api import parse_area, parse_length, resolve_format

        fmt = resolve_format("", vector)
        vector_path = out / f"landcover{fmt.extensions[0]}"
        names.append(vector_path.name)
        parse_area(vector_options.get("min_area"))  # bad values fail now, not after the inference
        parse_length(vector_options.get("simplify"))
    elif vector_options:
        raise ParameterError(
            f"{', '.join('--' + k.replace('_', '-') for k in vector_options)} only apply with --vector; "
            "add --vector gpkg (or parquet, fgb, geojson), or drop them"
        )
    with RunFolder(out, names, overwrite) as run:  # one run per folder; removes a killed run's temporaries
        run_id = run.run_id
        lc = landcover_product(str(out), run_id, card.classes, card.id)
        prob = percent_product(str(out), run_id, "probabilities", [c.name for c in card.classes], card.id) \
            if probabilities else None
        conf = percent_product(str(out), run_id, "confidence", ["confidence (max class probability)"], card.id) \
            if confidence else None
        products: list[Product] = [p for p in (lc, prob, conf) if p is not None]
        if when:
            for p in products:
                p.tags["ACQUISITION_DATETIME"] = when
        run.on_failure(lambda: discard(products))
        spec = RunSpec(
            scene_path=os.path.abspath(info.path),
            bands=tuple(band_idx),
            # A plain nodata value is tested on the values already read; real masks (alpha, mask band) are read.
            use_masks=info.per_dataset_mask and not info.nodata_only_mask,
            input_nodata=info.nodata if info.nodata_only_mask else (
                None if info.per_dataset_mask else card.input_nodata),
            model_path=str(model_path.resolve()),
            device=str(dev),
            amp=amp,
            torch_threads=torch_threads,
            batch_size=batch_size,
            overlap=overlap,
            blend=blend,
            height=info.height,
            width=info.width,
            block_size=block_size,
            class_values=tuple(card.class_values),
            landcover_part=lc.part,
            probabilities_part=prob.part if prob else None,
            confidence_part=conf.part if conf else None,
            tta=tta,
        )
        bar = make_progress(len(plan), "tiles", progress)
        with warnings.catch_warnings():
            if not info.georeferenced:  # accepted with allow_ungeoreferenced: rasterio's warnings are noise now
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for p in products:
                create_part(p, info)
            try:
                hist = graph.run(spec, list(plan), blocks, scheduler, n_workers, bar)
            finally:
                bar.close()
            nodata = int(hist[NODATA])
            if nodata == info.width * info.height:
                raise EmptySceneError(
                    f"{info.path} has no valid pixel in bands {','.join(map(str, band_idx))} "
                    "(all nodata); check the scene, its nodata value, or --bands"
                )
            class_pixels = {c.name: int(hist[c.value]) for c in card.classes}
            seconds = time.perf_counter() - t0
            record = {
                "geoseg_version": __version__,
                "run_id": run_id,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "scene": os.path.abspath(info.path),
                "acquired": when,
                "acquired_from": acquired_from,
                "bands": band_idx,
                "model": {"id": card.id, "version": card.version, "path": str(model_path.resolve()),
                          "trained": card.trained, "architecture": card.architecture, "encoder": card.encoder},
                "classes": [asdict(c) for c in card.classes],
                "grid": {"crs": info.crs_wkt, "transform": list(info.transform), "width": info.width,
                         "height": info.height},
                "options": {"tile_size": tile_size, "overlap": overlap, "blend": blend, "batch_size": batch_size,
                            "block_size": block_size, "workers": n_workers, "scheduler": scheduler,
                            "device": str(dev), "torch_threads": torch_threads, "tta": tta},
                "tiles": len(plan),
                "computed_pixels": plan.computed_pixels,
                "class_pixels": class_pixels,
                "nodata_pixels": nodata,
                "pixel_area_m2": pixel_area_m2(info.crs_wkt, info.transform, info.width, info.height),
                "outputs": {p.name: os.path.basename(p.final) for p in products},
                "seconds": round(seconds, 3),
                "host": platform.node(),
            }
            # All blocks are written: build every COG first, then move them all into place.
            for p in products:
                run.stage(build_cog(p), p.final)
            run.temp("run.json").write_text(json.dumps(record, indent=2) + "\n")
            run.publish()
        extra: dict = {}
        if vector is not None:
            from geoseg.vector.api import vectorize_raster

            # forked worker processes where safe, else threads (see vectorize.fork_is_safe); a tcp://
            # cluster is not used for this step
            vres = vectorize_raster(lc.final, vector_path, format=vector, overwrite=True, workers=n_workers,
                                    scheduler="synchronous" if scheduler == "synchronous" else "processes",
                                    progress=progress, **vector_options)
            extra["vector"] = vres.output
            extra["vector_features"] = vres.features
        else:
            vres = None
        extra["item"] = _deliver(out, lc, prob, conf, card, class_pixels, vres)
        return PredictResult(
            out_dir=str(out),
            landcover=lc.final,
            probabilities=prob.final if prob else None,
            confidence=conf.final if conf else None,
            run_record=str(out / "run.json"),
            run_id=run_id,
            model_id=card.id,
            trained_model=card.trained,
            tiles=len(plan),
            class_pixels=class_pixels,
            nodata_pixels=nodata,
            pixel_area_m2=record["pixel_area_m2"],
            seconds=seconds,
            extra=extra,
        )
