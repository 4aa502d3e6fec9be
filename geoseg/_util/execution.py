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
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
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


@contextmanager
def cluster_client(scheduler: str, client: Any = None) -> Iterator[Any]:
    """The dask.distributed ``Client`` a run's tasks go to: ``client`` as given (left open: the caller's, e.g.
    a dask-jobqueue, dask-kubernetes or Coiled cluster's), a new one connected to a ``tcp://`` scheduler (closed
    at the end), or None for the local schedulers."""
    if client is not None:
        yield client
    elif scheduler.startswith("tcp://"):
        from distributed import Client

        with Client(scheduler) as c:
            yield c
    else:
        yield None


def has_resource(client: Any, name: str) -> bool:
    """Whether any worker of ``client``'s cluster declares the dask resource ``name`` (``--resources GPU=1``)."""
    workers = client.scheduler_info().get("workers", {})
    return any(name in (w.get("resources") or {}) for w in workers.values())


def _host_cores() -> tuple[str, int]:
    """(host name, cores this process may use): run on every worker by :func:`threads_by_host`."""
    import socket

    return socket.gethostname(), default_workers()


def threads_by_host(client: Any) -> tuple[tuple[str, int], ...]:
    """Intra-op threads for one task on each host of ``client``'s cluster: the host's cores over the dask threads
    of all its worker processes (so ``dask worker --nworkers 1 --nthreads 1`` on an 8-core node gives its one
    task at a time 8 threads, ``--nworkers 2 --nthreads 4`` gives each of the 8 tasks one), sorted by host."""
    cores = client.run(_host_cores)  # {worker address: (host, cores)}
    nthreads = client.nthreads()
    per_host: dict[str, list[int]] = {}
    for addr, (host, n) in cores.items():
        entry = per_host.setdefault(host, [0, 0])
        entry[0] = max(entry[0], int(n))
        entry[1] += int(nthreads.get(addr, 1))
    return tuple(sorted((h, max(1, c // t)) for h, (c, t) in per_host.items()))


def annotated(resources: dict[str, float] | None) -> AbstractContextManager[Any]:
    """Tasks built inside need ``resources`` of a dask.distributed worker (none: no annotation)."""
    if not resources:
        return nullcontext()
    import dask

    return dask.annotate(resources=resources)


def execute(
    tasks: Sequence[Delayed],
    scheduler: str,
    workers: int,
    progress: Progress,
    weights: dict[str, int],
    watch: Sequence[Delayed] = (),
    client: Any = None,
) -> list[Any]:
    """Compute ``tasks`` on threads, processes, a ``tcp://`` dask.distributed scheduler or ``client``.

    Returns their results in order.  The progress bar advances by ``weights[key]``
    whenever a task of that key finishes; ``watch`` are intermediate tasks whose
    completion should count too (on a cluster their results are released at once).
    """
    import dask
    from dask.callbacks import Callback

    if client is not None or scheduler.startswith("tcp://"):
        with cluster_client(scheduler, client) as c:
            return _on_cluster(c, tasks, watch, progress, weights, scheduler)

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


def _on_cluster(client: Any, tasks: Sequence[Delayed], watch: Sequence[Delayed], progress: Progress,
                weights: dict[str, int], scheduler: str) -> list[Any]:
    """:func:`execute` on a dask.distributed ``client``.  A worker lost meanwhile (its tasks are rerun
    elsewhere by the scheduler) is one warning line; a task that killed every worker it ran on
    (``KilledWorker``) is a :class:`~geoseg.errors.WorkerLostError` (exit 71)."""
    from distributed import KilledWorker, as_completed

    where = scheduler if scheduler.startswith("tcp://") else "the cluster"
    start = time.time()
    # not optimised: keeps the tasks' annotations (resources) and keys
    futures = client.compute(list(watch) + list(tasks), optimize_graph=False)
    order = {f.key: i for i, f in enumerate(futures[len(watch):])}
    results: list[Any] = [None] * len(order)
    error: WorkerLostError | None = None
    try:
        for fut in as_completed(futures):
            progress.advance(weights.get(str(fut.key), 0))
            if fut.key in order:
                results[order[fut.key]] = fut.result()
            fut.release()
    except KilledWorker as e:
        error = WorkerLostError(
            f"a task ({e.args[0] if e.args else '?'}) killed every dask worker it ran on at {where} (out of "
            "memory?); give the workers more memory or lower --workers/--block-size, then rerun")
    finally:
        client.cancel(futures)  # a failed or interrupted run leaves nothing running on a shared cluster
        _warn_lost_workers(client, start, where)
    if error is not None:
        raise error
    return results


def run_each(fn: Callable[..., Any], items: Sequence[Any], name: str, spec: Any, execution: Execution,
             progress: Progress) -> list[Any]:
    """``[fn(spec, item) for item in items]`` as one task each (keys ``<name>-<i>``), in order; the bar
    advances by one per finished task."""
    from dask.delayed import delayed

    tasks = [delayed(fn, pure=True)(spec, item, dask_key_name=f"{name}-{i}") for i, item in enumerate(items)]
    weights = {f"{name}-{i}": 1 for i in range(len(items))}
    return execute(tasks, execution.scheduler, execution.workers, progress, weights)
