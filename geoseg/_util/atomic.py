"""The one atomic write: a hidden temporary file beside the target, fsynced, renamed into place; the
temporary is removed on any failure or interruption, so a reader sees the old file or the new one, never half.

Every product, sidecar, record and state file of geoseg is written through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from geoseg.errors import DiskFullError, GeosegError, OutputError, OutputExistsError

#: What a failed write's error tells the user to do, unless the caller says better.
WRITABLE_HINT = "check the folder is writable"

SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: What GDAL and libtiff say when a write did not reach the disk (rasterio gives no errno).
_WRITE_FAILED = ("no space left", "disk quota", "write failed", "write error", "tiffappendtostrip",
                 "tiffrewritedirectory", "tiffwritedirectory", "failed to write", "short write")


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or a GDAL write that failed."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in SPACE_ERRNOS:
            return True
        if not isinstance(e, GeosegError) and type(e).__module__.startswith("rasterio"):
            text = str(e).lower()
            if any(s in text for s in _WRITE_FAILED):
                return True
        elif "no space left on device" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False


def temp_path(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """``dir/name.ext`` -> ``dir/.name.ext.<random>.<tag>.ext``: hidden, unique, same folder (so the rename
    is atomic), same extension (GDAL and OGR choose drivers by it)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}.{tag}{p.suffix}")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or folder's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(*paths: str | os.PathLike) -> None:
    """Remove files that may not exist."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def publish(tmp: str | os.PathLike, path: str | os.PathLike, *, fsync: bool = True, replace: bool = True) -> None:
    """Move a finished temporary file onto ``path`` (fsync the file first and the folder after).

    ``replace=False`` never replaces a file that appeared at ``path`` meanwhile (another run's): a hard link
    fails if the name exists, where a rename would not (:class:`OutputExistsError`)."""
    if fsync:
        fsync_path(tmp)
    if replace:
        os.replace(tmp, path)
    else:
        meanwhile = f"{path} was created by another run meanwhile; pass --overwrite to replace it"
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputExistsError(meanwhile) from None
        except OSError:  # no hard links on this file system: check, then rename
            if Path(path).exists():
                raise OutputExistsError(meanwhile) from None
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    if fsync:
        with contextlib.suppress(OSError):  # some filesystems refuse to fsync a folder
            fsync_path(Path(path).parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True, fsync: bool = True,
                hint: str = WRITABLE_HINT, mkdir: bool = False, space_errors_raw: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it is renamed onto ``path``.

    ``overwrite=False`` refuses an existing ``path`` (:class:`OutputExistsError`).  An ``OSError`` becomes
    one :class:`OutputError` line ending in ``hint`` (``space_errors_raw``: except a full disk or a failed GDAL
    write, raised as it is for :func:`geoseg.io.space.writing` to name the output folder).  On any failure the
    temporary file (and a GDAL ``.aux.xml`` beside it) is removed and ``path`` is untouched.
    """
    p = Path(path)
    if not overwrite and p.exists():
        raise OutputExistsError(f"{p} already exists; pass --overwrite or choose another path")
    tmp = temp_path(p)
    try:
        if mkdir:
            p.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        publish(tmp, p, fsync=fsync)
    except GeosegError:
        raise
    except OSError as e:
        if space_errors_raw and is_no_space(e):  # the caller makes the one full-disk line (io.space.writing)
            raise
        raise OutputError(f"cannot write {p} ({e.strerror or e}); {hint}") from None
    finally:
        remove_quietly(tmp, f"{tmp}.aux.xml")


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], **options: object) -> str:
    """Call ``write(tmp_path)``, then rename the result onto ``path`` (options of :func:`atomic_path`)."""
    with atomic_path(path, **options) as tmp:  # type: ignore[arg-type]
        write(str(tmp))
    return str(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, **options: object) -> str:
    with atomic_path(path, **options) as tmp:  # type: ignore[arg-type]
        tmp.write_bytes(data)
    return str(path)


def atomic_write_text(path: str | os.PathLike, text: str, **options: object) -> str:
    """Write ``text`` as UTF-8, atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), **options)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, shared: bool = False) -> Iterator[Path]:
    """Yield a new hidden folder beside ``path`` to fill; on success its files are fsynced, whatever is at
    ``path`` is removed and the folder renamed onto it; on any failure the folder is removed.

    A folder-level :func:`atomic_path` (for model packages and training checkpoints).
    The folder gets the usual (umask) permissions; ``shared``: its files too (safetensors writes its files
    private), as a package is meant to be shared.
    """
    path = Path(path)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            if shared:
                os.chmod(f, 0o666 & ~umask)
            fsync_path(f)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        publish(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
