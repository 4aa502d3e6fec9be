"""Resume inside a scene: the fingerprint of a prediction's output, its block journal, and the products
assembled from the journal's block files.

A run opens the journal of its fingerprint in ``OUT`` (:class:`geoseg.io.journal.BlockJournal`): the blocks an
earlier, killed run of the same fingerprint finished are not computed again (their tasks are not even built),
the others are, and every product is a VRT mosaic of all block files converted by GDAL's COG driver, so a
resumed run's COGs are byte-identical to an uninterrupted run's.  The fingerprint is every field of the
:class:`~geoseg.predict.tasks.RunSpec` that shapes the output (the tasks' whole input but paths, timers and
thread counts), the tile size, the input files' sizes and modification times, the model's weights and card
(:func:`geoseg.model.export.graph_key`) and geoseg's version: a change in any discards the journal, with a note.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio

from geoseg._version import __version__
from geoseg.io.grid import Block
from geoseg.io.journal import BlockJournal, BlockMeta, file_stats, input_files
from geoseg.io.output import Product, build_cog, mosaic_vrt
from geoseg.io.raster import SceneInfo
from geoseg.predict.tasks import RunSpec

#: RunSpec fields that never change a block's bytes (where files are, timers, threads, GDAL's cache); the
#: scene and model paths are replaced by what their files hold.
_NOT_OUTPUT = ("scene_path", "model_path", "journal_dir", "run_key", "profile", "torch_threads", "gdal_cache_bytes",
               "gdal_config", "threads_by_host", "cloud_mask")


def _scene_files(info: SceneInfo) -> list[str]:
    files = input_files(info.path) if os.path.exists(info.path) else []
    try:
        with rasterio.open(info.gdal_name) as src:  # a VRT lists its sources
            files += [f for f in src.files if os.path.isfile(f)]
    except rasterio.errors.RasterioError:
        pass
    return files


def fingerprint_fields(spec: RunSpec, info: SceneInfo, tile_size: int, model_key: str) -> dict[str, Any]:
    """Everything a block's bytes depend on (see the module docstring)."""
    options = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in _NOT_OUTPUT}
    mask = spec.cloud_mask
    scene: dict[str, Any] = {"path": info.path, "files": file_stats(_scene_files(info))}
    if info.dataset is not None:  # a product reader's VRT XML: its text, not a file
        scene["dataset_sha256"] = hashlib.sha256(info.dataset.encode()).hexdigest()
    return {
        "geoseg": __version__,
        "scene": scene,
        "model": model_key,
        "options": {**options, "tile_size": tile_size},
        "cloud_mask": None if mask is None else {**dataclasses.asdict(mask),
                                                 "files": file_stats([mask.dataset, mask.origin])},
    }


def open_journal(out_dir: str | os.PathLike, fields: dict[str, Any], resume: bool) -> BlockJournal:
    """The run's journal in ``out_dir`` (the caller holds the folder's lock); ``resume=False`` starts afresh.
    Blocks of an earlier run with another fingerprint are discarded with a warning naming what changed."""
    journal = BlockJournal(out_dir, fields)
    if not resume:
        journal.remove()
    note = journal.open()
    if note:
        warnings.warn(note, UserWarning, stacklevel=3)
    return journal


def finished(journal: BlockJournal, blocks: Sequence[Block]) -> tuple[list[Block], np.ndarray, int]:
    """(the blocks still to compute, the histogram and cloud pixels of those an earlier run finished)."""
    done: dict[int, BlockMeta] = journal.finished([b.index for b in blocks])
    hist = np.zeros(256, dtype=np.int64)
    cloud = 0
    for meta in done.values():
        hist += meta.hist
        cloud += meta.cloud_pixels
    return [b for b in blocks if b.index not in done], hist, cloud


def assemble(journal: BlockJournal, spec: RunSpec, products: Sequence[Product], blocks: Sequence[Block]
             ) -> list[str]:
    """Each product's COG (beside its final path; not yet renamed) from the journal's block files."""
    bands = spec.product_bands()
    files = [(b.window, str(journal.block_path(b.index))) for b in blocks]
    out = []
    for p in products:
        vrt = mosaic_vrt(p, journal.dir / f"{p.name}.vrt", files, bands[p.name])
        out.append(build_cog(p, vrt))
    return out
