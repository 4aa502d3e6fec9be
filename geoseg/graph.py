"""The dask graph of a prediction and its execution on threads, processes or a dask.distributed cluster.

The only module of the prediction path that imports dask.  Graph shape::

    predict-tiles-<batch>  ->  pieces-<batch>-<block>  ->  write-block-<block>

Batch tasks hold model outputs only until the blocks they touch are written, so
memory is bounded by the tiles in flight, never by the scene size.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import dask
import numpy as np
from dask.callbacks import Callback
from dask.delayed import Delayed, delayed

from .errors import ParameterError
from .grid import Block, Tile, batches
from .progress import Progress
from .tasks import RunSpec, blend_and_write, pieces_for, predict_tiles

LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


def check_scheduler(scheduler: str) -> str:
    if scheduler in LOCAL_SCHEDULERS or scheduler.startswith("tcp://"):
        return scheduler
    raise ParameterError(
        f"unknown scheduler {scheduler!r}; choose threads, processes, or tcp://HOST:PORT of a dask scheduler"
    )


def build(spec: RunSpec, tiles: Sequence[Tile], blocks: Sequence[Block]) -> tuple[list[Delayed], list[Delayed], dict[str, int]]:
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


class _TileProgress(Callback):
    def __init__(self, progress: Progress, tiles_per_key: dict[str, int]) -> None:
        super().__init__()
        self._progress, self._tiles = progress, tiles_per_key

    def _posttask(self, key, result, dsk, state, worker_id):  # noqa: D401 - dask callback signature
        n = self._tiles.get(key if isinstance(key, str) else str(key))
        if n:
            self._progress.advance(n)


def run(
    spec: RunSpec,
    tiles: Sequence[Tile],
    blocks: Sequence[Block],
    scheduler: str,
    workers: int,
    progress: Progress,
) -> np.ndarray:
    """Execute the graph; return the scene's class-code histogram (256 bins)."""
    batch_tasks, block_tasks, tiles_per_key = build(spec, tiles, blocks)
    hist = np.zeros(256, dtype=np.int64)
    if scheduler.startswith("tcp://"):
        from distributed import Client, as_completed

        with Client(scheduler) as client:
            futures = client.compute(batch_tasks + block_tasks)
            batch_keys = {f.key: tiles_per_key[f.key] for f in futures[: len(batch_tasks)]}
            del batch_tasks, block_tasks
            for fut in as_completed(futures):
                if fut.key in batch_keys:
                    progress.advance(batch_keys[fut.key])
                else:
                    hist += fut.result()
                fut.release()
            del futures
        return hist
    with dask.config.set(scheduler=scheduler, num_workers=workers), _TileProgress(progress, tiles_per_key):
        for h in dask.compute(*block_tasks, optimize_graph=False):
            hist += h
    return hist
