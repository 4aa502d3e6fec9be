"""Task execution, written once: the checks of ``--scheduler``/``--workers``/``--block-size`` and the
run of a list of dask tasks on threads, processes or a ``tcp://`` dask.distributed scheduler, with progress.

With :mod:`geoseg.predict.graph` and :mod:`geoseg.vector.api` (which drives its own worker processes),
the only place that imports dask.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geoseg._util.progress import Progress
from geoseg.errors import ParameterError, WorkerLostError

if TYPE_CHECKING:
    from dask.delayed import Delayed

LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


def check_scheduler(scheduler: str) -> str:
    if scheduler in LOCAL_SCHEDULERS or scheduler.startswith("tcp://"):
        return scheduler
    raise ParameterError(
        f"unknown scheduler {scheduler!r}; choose threads, processes, synchronous, "
        "or tcp://HOST:PORT of a dask scheduler"
    )


def default_workers() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``None`` -> :func:`default_workers`; else a positive count."""
    if workers is None:
        return default_workers()
    if int(workers) < 1:
        raise ParameterError(f"--workers {workers} must be >= 1")
    return int(workers)


@dataclass(frozen=True)
class Execution:
    """Where and how wide a run's tasks execute, validated once."""

    scheduler: str
    workers: int


def check_execution(scheduler: str, workers: int | None) -> Execution:
    return Execution(check_scheduler(scheduler), check_workers(workers))


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
    import dask
    from dask.callbacks import Callback

    if scheduler.startswith("tcp://"):
        return _execute_distributed(tasks, scheduler, progress, weights, watch)

    class _Progress(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            n = weights.get(key if isinstance(key, str) else str(key))
            if n:
                progress.advance(n)

    from concurrent.futures.process import BrokenProcessPool

    settings: dict[str, Any] = {"scheduler": scheduler, "num_workers": workers}
    if scheduler == "processes":  # no orphan keeps computing (or writing) after its parent was killed
        settings["multiprocessing.initializer"] = functools.partial(end_with_parent, os.getpid())
    try:
        with dask.config.set(settings), _Progress():
            return list(dask.compute(*tasks, optimize_graph=False))
    except BrokenProcessPool:  # raised after the except: one line, no chain
        error = WorkerLostError(f"a dask worker process was killed during the run (usually out of memory); free "
                                f"memory or lower --workers ({workers}) or --block-size, then rerun")
    raise error


def end_with_parent(parent: int) -> None:
    """In a worker process: SIGTERM ends it as by default, and it ends when its parent dies (Linux
    ``PR_SET_PDEATHSIG``), rather than computing, writing or waiting for tasks forever as an orphan after
    the parent was killed (SIGKILL, the out-of-memory killer)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _execute_distributed(tasks: Sequence[Delayed], scheduler: str, progress: Progress, weights: dict[str, int],
                         watch: Sequence[Delayed]) -> list[Any]:
    """:func:`execute` on a ``tcp://`` dask.distributed scheduler.  A worker lost meanwhile (its tasks are rerun
    elsewhere by the scheduler) is one warning line; a task that killed every worker it ran on
    (``KilledWorker``) is a :class:`~geoseg.errors.WorkerLostError` (exit 71)."""
    from distributed import Client, KilledWorker, as_completed

    with Client(scheduler) as client:
        start = time.time()
        error: WorkerLostError | None = None
        try:
            futures = client.compute(list(watch) + list(tasks))
            order = {f.key: i for i, f in enumerate(futures[len(watch):])}
            results: list[Any] = [None] * len(order)
            for fut in as_completed(futures):
                progress.advance(weights.get(str(fut.key), 0))
                if fut.key in order:
                    results[order[fut.key]] = fut.result()
                fut.release()
        except KilledWorker as e:
            error = WorkerLostError(
                f"a task ({e.args[0] if e.args else '?'}) killed every dask worker it ran on at {scheduler} (out of "
                "memory?); give the workers more memory or lower --workers/--block-size, then rerun")
        finally:
            _warn_lost_workers(client, start, scheduler)
        if error is not None:
            raise error
        return results


def lost_workers(events: Sequence[tuple[float, Any]], since: float) -> tuple[list[str], int]:
    """From a scheduler's ``"all"`` events: the workers removed unexpectedly since ``since`` and the number of
    tasks they were running (rerun elsewhere)."""
    workers, tasks = [], 0
    for stamp, msg in events:
        if stamp >= since and isinstance(msg, dict) and msg.get("action") == "remove-worker" and not msg.get(
                "expected"):
            workers.append(str(msg.get("worker", "?")))
            tasks += len(msg.get("processing-tasks") or ())
    return workers, tasks


def _warn_lost_workers(client: Any, since: float, scheduler: str) -> None:
    try:
        workers, tasks = lost_workers(client.get_events("all"), since)
    except Exception:  # an old scheduler without events, a closed connection: nothing to tell
        return
    if workers:
        warnings.warn(f"{len(workers)} dask worker(s) of {scheduler} were lost during the run ({', '.join(workers)}); "
                      f"the scheduler reran their {tasks} assigned task(s) elsewhere, so the outputs are complete; "
                      "check the workers' memory and logs", RuntimeWarning, stacklevel=3)


def run_each(fn: Callable[..., Any], items: Sequence[Any], name: str, spec: Any, execution: Execution,
             progress: Progress) -> list[Any]:
    """``[fn(spec, item) for item in items]`` as one task each (keys ``<name>-<i>``), in order; the bar
    advances by one per finished task."""
    from dask.delayed import delayed

    tasks = [delayed(fn, pure=True)(spec, item, dask_key_name=f"{name}-{i}") for i, item in enumerate(items)]
    weights = {f"{name}-{i}": 1 for i in range(len(items))}
    return execute(tasks, execution.scheduler, execution.workers, progress, weights)
