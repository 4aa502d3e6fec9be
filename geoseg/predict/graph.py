"""The dask graph of a prediction and its execution on threads, processes or a dask.distributed cluster.

The prediction path's dask graph; execution itself is :func:`geoseg._util.execution.execute`.  Graph shape::

    predict-tiles-<batch>  ->  pieces-<batch>-<block>  ->  write-block-<block>

Batch tasks hold model outputs only until the blocks they touch are written, so
memory is bounded by the tiles in flight, never by the scene size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from dask.delayed import Delayed, delayed

from geoseg._util.execution import execute
from geoseg._util.progress import Progress
from geoseg.io.grid import Block, Tile, batches
from geoseg.predict.profile import Timer
from geoseg.predict.tasks import RunSpec, blend_and_write, pieces_for, predict_tiles


def build(spec: RunSpec, tiles: Sequence[Tile], blocks: Sequence[Block]
          ) -> tuple[list[Delayed], list[Delayed], dict[str, int]]:
    """(batch tasks, block tasks, tiles per batch key)."""
    batch_list = batches(list(tiles), spec.batch_size)
    batch_tasks = []
    tiles_per_key: dict[str, int] = {}
    touching: dict[int, set[int]] = defaultdict(set)
    for bi, batch in enumerate(batch_list):
        key = f"predict-tiles-{bi}"
        batch_tasks.append(delayed(predict_tiles, pure=True)(spec, batch, dask_key_name=key))
        tiles_per_key[key] = len(batch)
        for t in batch:
            for block_index, _ in spec.blocks_touching(t.window):
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
) -> tuple[np.ndarray, dict[str, float] | None]:
    """Execute the prediction graph; return the scene's class-code histogram (256 bins) and, with
    ``spec.profile``, the tasks' stage seconds summed (:mod:`geoseg.predict.profile`)."""
    batch_tasks, block_tasks, tiles_per_key = build(spec, tiles, blocks)
    hist = np.zeros(256, dtype=np.int64)
    timer = Timer(spec.profile)
    for r in execute(block_tasks, scheduler, workers, progress, tiles_per_key, watch=batch_tasks):
        hist += r.hist
        timer.add(r.seconds)
    return hist, timer.result()
