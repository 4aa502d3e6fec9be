"""Disk space: a free-space check before any work, and a full disk met anyway as one output-error line.

A run's rasters are first streamed into temporary GeoTIFFs and then converted to COGs beside them, so at the
peak a folder holds both: :func:`needed_bytes` bounds that by the uncompressed sizes (grid x bands x dtype of
each product; DEFLATE only makes them smaller), plus the COG's overviews (a third) and a margin.  The check
is an upper bound, so it may refuse a run that would just have fitted; ``GEOSEG_SKIP_SPACE_CHECK=1`` skips it.

A full disk during the run (another process filled it, or a quota) surfaces as ``OSError(ENOSPC)`` from
Python or as a GDAL write error (``Write failed``, ``TIFFAppendToStrip``, ``No space left on device``);
:func:`writing` turns any of them into one :class:`~geoseg.errors.DiskFullError` line (exit 5).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from geoseg._util.atomic import SPACE_ERRNOS, is_no_space  # the one copy of the full-disk test lives in _util
from geoseg.errors import DiskFullError, GeosegError, OutputError

#: Set to 1 to skip :func:`check_free_space` (the bound is deliberately pessimistic).
SKIP_ENV = "GEOSEG_SKIP_SPACE_CHECK"
#: Overviews of a COG add at most a third of its full-resolution size (each level a quarter of the last).
OVERVIEWS = 1 / 3
#: TIFF headers, tile indexes, sidecars (styles, quicklook, report, STAC Item, run.json).
SLACK_BYTES = 16 << 20
T = TypeVar("T")
def raster_bytes(width: int, height: int, count: int = 1, itemsize: int = 1) -> int:
    """Uncompressed size of a raster: grid x bands x bytes per value."""
    return int(width) * int(height) * int(count) * int(itemsize)


def needed_bytes(rasters: Iterable[int]) -> int:
    """Upper bound of the peak space a run's rasters (uncompressed sizes) take: every temporary GeoTIFF and
    every COG with its overviews at once, 5 % margin, plus :data:`SLACK_BYTES`."""
    raw = sum(rasters)
    return int(raw * (2 + OVERVIEWS) * 1.05) + SLACK_BYTES


def _existing(folder: Path) -> Path:
    p = folder.absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes (for this user) on the file system ``folder`` is (or would be created) on."""
    return shutil.disk_usage(_existing(Path(folder))).free


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_free_space(folder: str | os.PathLike, need: int, what: str) -> None:
    """Refuse a run before any work when ``folder``'s file system has less than ``need`` bytes free."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    free = free_bytes(folder)
    if free < need:
        raise DiskFullError(f"not enough free space for {what} in {folder}: up to {human(need)} needed "
                            f"(uncompressed upper bound), {human(free)} free; free some space or choose another -o "
                            f"(or set {SKIP_ENV}=1 if the outputs compress well)")


def disk_full_error(folder: str | os.PathLike, exc: BaseException) -> OutputError:
    """The one line for a write into ``folder`` that failed in ``exc``: a full disk when little is free, else
    the write error itself (a failing disk, a network share gone)."""
    if isinstance(exc, DiskFullError):
        return exc
    free = free_bytes(folder)
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    if free < SLACK_BYTES or (isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS) or "no space" in first.lower():
        return DiskFullError(f"the disk of {folder} is full ({human(free)} free): nothing was written; free some "
                             "space or choose another -o, then rerun")
    return OutputError(f"writing into {folder} failed ({first}; {human(free)} free): nothing was written; check "
                       "the disk, then rerun")


def writing(folder: str | os.PathLike, write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``write(*args, **kwargs)``, with a full disk (or a GDAL write failure) turned into one output-error line
    that also crosses a worker process intact: it is raised after the ``except``, so it carries no
    ``__context__`` (dask's processes scheduler pickles the whole chain, and rasterio's errors do not unpickle).
    Call it where no other exception is being handled (a task body, a plain function)."""
    try:
        return write(*args, **kwargs)
    except GeosegError:
        raise
    except Exception as exc:
        if not is_no_space(exc):
            raise
        error = disk_full_error(folder, exc)
    raise error
