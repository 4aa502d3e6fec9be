"""The dask graph of a prediction and its execution on threads, processes or a dask.distributed cluster.

The only module of the prediction path that imports dask.  Graph shape::

    predict-tiles-<batch>  ->  pieces-<batch>-<block>  ->  write-block-<block>

Batch tasks hold model outputs only until the blocks they touch are written, so
memory is bounded by the tiles in flight, never by the scene size.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Sequence

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
        f"unknown scheduler {scheduler!r}; choose threads, processes, synchronous, "
        "or tcp://HOST:PORT of a dask scheduler"
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


def default_workers() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class _Progress(Callback):
    def __init__(self, progress: Progress, weights: dict[str, int]) -> None:
        super().__init__()
        self._progress, self._weights = progress, weights

    def _posttask(self, key, result, dsk, state, worker_id):  # noqa: D401 - dask callback signature
        n = self._weights.get(key if isinstance(key, str) else str(key))
        if n:
            self._progress.advance(n)


def execute(
    tasks: Sequence[Delayed],
    scheduler: str,
    workers: int,
    progress: Progress,
    weights: dict[str, int],
    watch: Sequence[Delayed] = (),
) -> list[Any]:
    """Compute ``tasks`` on threads, processes or a ``tcp://`` dask.distributed scheduler.

    Returns their results in order.  The progress bar advances by ``weights[key]``
    whenever a task of that key finishes; ``watch`` are intermediate tasks whose
    completion should count too (on a cluster their results are released at once).
    """
    if scheduler.startswith("tcp://"):
        from distributed import Client, as_completed

        with Client(scheduler) as client:
            futures = client.compute(list(watch) + list(tasks))
            order = {f.key: i for i, f in enumerate(futures[len(watch):])}
            results: list[Any] = [None] * len(order)
            for fut in as_completed(futures):
                progress.advance(weights.get(str(fut.key), 0))
                if fut.key in order:
                    results[order[fut.key]] = fut.result()
                fut.release()
            return results
    with dask.config.set(scheduler=scheduler, num_workers=workers), _Progress(progress, weights):
        return list(dask.compute(*tasks, optimize_graph=False))


def run(
    spec: RunSpec,
    tiles: Sequence[Tile],
    blocks: Sequence[Block],
    scheduler: str,
    workers: int,
    progress: Progress,
) -> np.ndarray:
    """Execute the prediction graph; return the scene's class-code histogram (256 bins)."""
    batch_tasks, block_tasks, tiles_per_key = build(spec, tiles, blocks)
    hist = np.zeros(256, dtype=np.int64)
    for h in execute(block_tasks, scheduler, workers, progress, tiles_per_key, watch=batch_tasks):
        hist += h
    return hist
