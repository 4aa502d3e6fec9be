"""Training batches: windows cropped, augmented and normalised into tensors, made ahead in a background thread.

:func:`prefetch` runs a batch generator in one worker thread, at most ``depth`` batches ahead of the
optimiser, so reading and augmenting windows overlaps the previous step instead of running between steps
(numpy and torch release the GIL in their array work).  One worker consuming the generator in order keeps
the run deterministic: the batches, and the random numbers they draw, are those of the plain loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from geoseg.model.card import Normalization
from geoseg.training.config import TrainConfig
from geoseg.training.data import TrainScene, augment, crop, normalise

T = TypeVar("T")
Window = tuple[int, int, int]  # (scene index, row, col)


def make_batch(scenes: list[TrainScene], windows: list[Window], size: int, norm: Normalization,
               rng: np.random.Generator | None, cfg: TrainConfig | None,
               memory_format: torch.memory_format = torch.contiguous_format) -> tuple[torch.Tensor, torch.Tensor]:
    """(x float32 (B, C, size, size) in ``memory_format``, target int64 (B, size, size)) of ``windows``;
    augmented as ``cfg`` says when ``rng`` is given (training), as they are otherwise (validation)."""
    xs, ts = [], []
    for si, r0, c0 in windows:
        x, valid, t = crop(scenes[si], r0, c0, size)
        if rng is not None and cfg is not None:
            x, valid, t = augment(x, valid, t, rng, cfg.d4, cfg.brightness, cfg.contrast)
        xs.append(normalise(x, valid, norm))
        ts.append(t.astype(np.int64))
    x_t = torch.from_numpy(np.stack(xs))
    if memory_format != torch.contiguous_format:
        x_t = x_t.contiguous(memory_format=memory_format)
    return x_t, torch.from_numpy(np.stack(ts))


def batch_windows(windows: list[Window], batch_size: int) -> Iterator[list[Window]]:
    for start in range(0, len(windows), batch_size):
        yield windows[start:start + batch_size]


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2, name: str = "geoseg-train-loader") -> Generator[T, None, None]:
    """The items of ``items``, produced in a background thread at most ``depth`` ahead of the consumer.

    In order, each once; an exception of the producer is raised in the consumer; closing the returned
    generator early (``contextlib.closing``, or leaving a ``for`` loop over it) stops and joins the thread.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(obj: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer, re-raised there
            put(_Failure(e))
            return
        put(_DONE)

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            obj = q.get()
            if obj is _DONE:
                return
            if isinstance(obj, _Failure):
                raise obj.exc
            yield obj
    finally:
        stop.set()
        worker.join()
