"""The one skeleton of a run that writes products into a folder (predict, change, vectorize, monitor):

    validate options -> plan -> ``with RunFolder(out, names, overwrite) as run:`` -> execute into temporaries
    (``run.temp``/``run.stage``) -> ``run.publish()`` (every product renamed into place, in order, after all of
    them are finished) -> sidecars and record.

On any failure or interruption before ``publish`` every staged temporary is removed and the folder's
existing outputs are untouched; a second run into a locked folder fails at once (exit 75); a full disk met
anywhere in the run becomes one :class:`~geoseg.errors.DiskFullError` line (exit 5, ``io.space``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from geoseg._util.atomic import publish, remove_quietly
from geoseg.errors import GeosegError
from geoseg.io.output import check_output_dir, new_run_id, output_dir_lock
from geoseg.io.space import disk_full_error, is_no_space


class RunFolder:
    """One run's outputs in ``out_dir``: refused early if a final name exists (without ``overwrite``),
    locked for the run (``lock``), staged under hidden temporary names, published all at once."""

    def __init__(self, out_dir: str | os.PathLike, names: Sequence[str], overwrite: bool, *, lock: bool = True,
                 check: bool = True) -> None:
        self.out = Path(out_dir)
        self.names = list(names)
        if check:
            check_output_dir(self.out, self.names, overwrite)
        self.run_id = new_run_id()
        self._lock = output_dir_lock(self.out) if lock else None
        self._staged: list[tuple[Path, Path]] = []
        self._on_failure: list[Callable[[], None]] = []
        self._on_exit: list[Callable[[], None]] = []

    def __enter__(self) -> RunFolder:
        if self._lock is not None:
            self._lock.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is not None:
                self.discard()
                if isinstance(exc, Exception) and not isinstance(exc, GeosegError) and is_no_space(exc):
                    raise disk_full_error(self.out, exc) from None  # one line (exit 5), temporaries removed
        finally:
            try:
                for cleanup in reversed(self._on_exit):
                    cleanup()
            finally:
                if self._lock is not None:
                    self._lock.__exit__(exc_type, exc, tb)

    def temp(self, name: str, tag: str = "part") -> Path:
        """A hidden temporary path for final ``name`` (``.<stem>.<run id>.<tag><ext>``), staged for publishing."""
        final = self.out / name
        tmp = self.out / f".{final.stem}.{self.run_id}.{tag}{final.suffix}"
        return self.stage(tmp, final)

    def work_dir(self, name: str) -> Path:
        """A hidden scratch folder for this run, removed when the run ends either way."""
        d = self.out / f".{name}.{self.run_id}.work"
        self._on_exit.append(lambda: shutil.rmtree(d, ignore_errors=True))
        return d

    def stage(self, tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
        """Publish ``tmp`` onto ``final`` at :meth:`publish`; remove it if the run fails first."""
        self._staged.append((Path(tmp), Path(final)))
        return Path(tmp)

    def on_failure(self, cleanup: Callable[[], None]) -> None:
        """Also run ``cleanup`` if the run fails (e.g. removing a product's intermediate files)."""
        self._on_failure.append(cleanup)

    def publish(self, *, fsync: bool = True, replace: bool = True) -> list[str]:
        """Move every staged temporary onto its final name, in staging order; returns the final paths.
        ``replace=False``: never replace a file another run created meanwhile (see ``_util.atomic.publish``)."""
        done = []
        for tmp, final in self._staged:
            if replace:
                remove_quietly(f"{final}.aux.xml")  # a previous run's GDAL sidecar must not outlive it
            publish(tmp, final, fsync=fsync, replace=replace)
            done.append(str(final))
        self._staged.clear()
        return done

    def discard(self) -> None:
        """Remove every staged temporary (and SQLite/GDAL side files of it) and run the cleanups."""
        for tmp, _ in self._staged:
            remove_quietly(tmp, *(f"{tmp}{extra}" for extra in (".aux.xml", "-wal", "-shm", "-journal")))
        self._staged.clear()
        for cleanup in reversed(self._on_failure):
            cleanup()
