"""vectorize's worker processes: forked only where that is safe, ending with their parent (PR_SET_PDEATHSIG),
and a killed worker (the out-of-memory killer's SIGKILL) reported as one :class:`~geoseg.errors.WorkerLostError`.

GDAL's polygonize holds the GIL, so the blocks run truly in parallel only in processes; one more forked
process writes the output (see :mod:`geoseg.vector.api`).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from geoseg._util.progress import Progress
from geoseg.errors import WorkerLostError


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


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Forked worker processes for the block tasks (see :func:`fork_is_safe`)."""
    import multiprocessing

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init,
                               initargs=(os.getpid(),))


def _worker_init(parent: int) -> None:
    """In each worker process: Ctrl-C is the parent's to handle (it cleans up and ends the pool),
    SIGTERM ends the worker as by default, and the worker ends when its parent dies (Linux), rather
    than waiting for tasks forever."""
    import signal

    from geoseg._util.execution import end_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(parent)


def wait_for(future: Future, progress: Progress) -> Any:
    """``future.result()``, redrawing the progress bar (its elapsed time) twice a second meanwhile:
    the bar has no thread of its own (see geoseg._util.progress)."""
    while True:
        try:
            return future.result(timeout=0.5)
        except FutureTimeout:  # (the builtin TimeoutError from Python 3.11 on)
            progress.refresh()


def worker_lost(writing: bool, workers: int, block_size: int) -> WorkerLostError:
    """The error for a worker process that was killed (a broken pool): the writer (``writing``) or a block
    worker, with the fix."""
    if writing:
        return WorkerLostError(
            "the vectorize writer process was killed (usually out of memory: GDAL needs about 66 bytes "
            "per vertex of the largest polygon to write it); free memory and run again"
        )
    return WorkerLostError(
        "a vectorize worker process was killed (usually out of memory); free memory, or lower "
        f"--workers (was {workers}) or --block-size (was {block_size})"
    )
