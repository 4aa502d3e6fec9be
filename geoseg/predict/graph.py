"""The dask graph of a prediction and its execution on threads, processes or a dask.distributed cluster.

The prediction path's dask graph; execution itself is :func:`geoseg._util.execution.execute`.  Graph shape::

    predict-tiles-<batch>  ->  pieces-<batch>-<block>  ->  write-block-<block>

Batch tasks hold model outputs only until the blocks they touch are written, so
memory is bounded by the tiles in flight, never by the scene size.  Each ``write-block`` task writes its
block as a file of the run's journal (:mod:`geoseg.io.journal`) and returns only numbers, so a resumed run
builds the graph of the blocks it still lacks, and nothing but pieces travels between workers.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from dask.delayed import Delayed, delayed

from geoseg._util.execution import annotated, cluster_client, execute, has_resource, threads_by_host
from geoseg._util.progress import Progress
from geoseg.io.grid import Block, Tile, batches
from geoseg.predict.profile import Timer
from geoseg.predict.tasks import (
    RunSpec,
    blend_and_write,
    blend_block_arrays,
    pieces_for,
    predict_array_tiles,
    predict_tiles,
)


def tiles_for(spec: RunSpec, tiles: Sequence[Tile], blocks: Sequence[Block]) -> list[Tile]:
    """The tiles that touch any of ``blocks`` (a resumed run predicts only these)."""
    wanted = {b.index for b in blocks}
    return [t for t in tiles if any(i in wanted for i, _ in spec.blocks_touching(t.window))]


def build(spec: RunSpec, tiles: Sequence[Tile], blocks: Sequence[Block], gpu: bool = False
          ) -> tuple[list[Delayed], list[Delayed], dict[str, int]]:
    """(batch tasks, block tasks, tiles per batch key) for the output ``blocks`` (all of the scene's, or those a
    resumed run still lacks); ``gpu``: the batch tasks (the forward passes) need a worker's ``GPU`` resource."""
    wanted = {b.index for b in blocks}
    batch_list = batches(tiles_for(spec, tiles, blocks), spec.batch_size)
    batch_tasks = []
    tiles_per_key: dict[str, int] = {}
    touching: dict[int, set[int]] = defaultdict(set)
    with annotated({"GPU": 1} if gpu else None):
        for bi, batch in enumerate(batch_list):
            key = f"predict-tiles-{bi}"
            batch_tasks.append(delayed(predict_tiles, pure=True)(spec, batch, dask_key_name=key))
            tiles_per_key[key] = len(batch)
            for t in batch:
                for block_index, _ in spec.blocks_touching(t.window):
                    if block_index in wanted:
                        touching[block_index].add(bi)
    block_tasks = []
    for block in blocks:
        parts = [
            delayed(pieces_for, pure=True)(batch_tasks[bi], block.index, dask_key_name=f"pieces-{bi}-{block.index}")
            for bi in sorted(touching[block.index])
        ]
        block_tasks.append(
            delayed(blend_and_write, pure=True)(spec, block, *parts, dask_key_name=f"write-block-{block.index}")
        )
    return batch_tasks, block_tasks, tiles_per_key


def run(
    spec: RunSpec,
    tiles: Sequence[Tile],
    blocks: Sequence[Block],
    scheduler: str,
    workers: int,
    progress: Progress,
    client: Any = None,
) -> tuple[np.ndarray, dict[str, float] | None, int]:
    """Execute the prediction graph of ``blocks``; return their class-code histogram (256 bins), with
    ``spec.profile`` the tasks' stage seconds summed (:mod:`geoseg.predict.profile`), and the pixels left out
    as cloud.  On a dask.distributed cluster (``client`` or a ``tcp://`` scheduler) whose workers declare a
    ``GPU`` resource, a CUDA run's forward tasks ask for one each; on CPU workers each task's intra-op threads
    are its host's cores over the dask threads there (:func:`geoseg._util.execution.threads_by_host`)."""
    hist = np.zeros(256, dtype=np.int64)
    timer = Timer(spec.profile)
    cloud = 0
    if not blocks:
        return hist, timer.result(), cloud
    with cluster_client(scheduler, client) as c:
        gpu = c is not None and spec.device.startswith("cuda") and has_resource(c, "GPU")
        if c is not None and spec.device == "cpu":
            spec = dataclasses.replace(spec, threads_by_host=threads_by_host(c))
        batch_tasks, block_tasks, tiles_per_key = build(spec, tiles, blocks, gpu)
        for r in execute(block_tasks, scheduler, workers, progress, tiles_per_key, watch=batch_tasks, client=c):
            hist += r.hist
            timer.add(r.seconds)
            cloud += r.cloud_pixels
    return hist, timer.result(), cloud


def _region(tiles: Sequence[Tile], height: int, width: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the scene pixels the tiles' read windows cover (clipped to the scene)."""
    r0 = max(0, min(t.window.row_off for t in tiles))
    c0 = max(0, min(t.window.col_off for t in tiles))
    r1 = min(height, max(t.window.row_end for t in tiles))
    c1 = min(width, max(t.window.col_end for t in tiles))
    return r0, r1, c0, c1


def lazy_arrays(spec: RunSpec, tiles: Sequence[Tile], blocks: Sequence[Block], data: Any, probabilities: bool
                ) -> tuple[Any, Any]:
    """The prediction graph over an in-memory or dask array ``data`` (selected bands, ``(bands, h, w)``), as lazy
    dask arrays: (classes ``(h, w)`` uint8, probabilities ``(classes, h, w)`` float32 or None).  Each tile batch
    task receives only the slice of ``data`` its tiles read; each block task blends its pieces as for files."""
    import dask.array as da

    arr = data if isinstance(data, da.Array) else da.from_array(data, chunks=(-1, spec.block_size, spec.block_size))
    batch_list = batches(list(tiles), spec.batch_size)
    batch_tasks = []
    touching: dict[int, set[int]] = defaultdict(set)
    for bi, batch in enumerate(batch_list):
        r0, r1, c0, c1 = _region(batch, spec.height, spec.width)
        batch_tasks.append(delayed(predict_array_tiles, pure=True)(spec, batch, arr[:, r0:r1, c0:c1], r0, c0))
        for t in batch:
            for block_index, _ in spec.blocks_touching(t.window):
                touching[block_index].add(bi)
    n = spec.n_classes
    rows: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for block in blocks:
        parts = [delayed(pieces_for, pure=True)(batch_tasks[bi], block.index) for bi in sorted(touching[block.index])]
        result = delayed(blend_block_arrays, pure=True, nout=2)(spec, block, probabilities, *parts)
        shape = (block.window.height, block.window.width)
        cls = da.from_delayed(result[0], shape=shape, dtype=np.uint8)
        prob = da.from_delayed(result[1], shape=(n, *shape), dtype=np.float32) if probabilities else None
        rows[block.window.row_off].append((cls, prob))
    ordered = [rows[k] for k in sorted(rows)]
    classes = da.block([[c for c, _ in row] for row in ordered])
    probs = da.block([[p for _, p in row] for row in ordered]) if probabilities else None
    return classes, probs
