"""The one file lock: an exclusive ``flock`` on a lock file, across threads (each call opens its own
descriptor) and processes on one host.  Closing the descriptor releases it, so a killed holder never
leaves a stale lock behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True,
              busy: Callable[[], BaseException] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, with its folder, if needed) for the block.

    ``wait=False``: if another holder has it, raise ``busy()`` (default :class:`BlockingIOError`).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            if busy is None:
                raise
            raise busy() from None
        yield
    finally:
        os.close(fd)  # releases the lock
