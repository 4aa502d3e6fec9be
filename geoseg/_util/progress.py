"""Progress display: a rich bar on an interactive terminal, silence otherwise."""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    def advance(self, n: int) -> None: ...
    def refresh(self) -> None: ...  # redraw (elapsed time) while waiting, without a step
    def close(self) -> None: ...


class NullProgress:
    def advance(self, n: int) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class RichProgress:
    """A rich bar redrawn on each step, from the caller's thread: no refresh thread, so
    a process showing progress may still fork worker processes safely (vectorize's blocks)."""

    def __init__(self, total: int, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as _P

        self._p = _P(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TimeElapsedColumn(), transient=False, auto_refresh=False,
        )
        self._p.start()
        self._closed = False
        self._task = self._p.add_task(description, total=total)

    def advance(self, n: int) -> None:
        self._p.advance(self._task, n)
        self.refresh()

    def refresh(self) -> None:
        if not self._closed:
            self._p.refresh()

    def close(self) -> None:
        self._closed = True
        self._p.stop()


def make_progress(total: int, description: str, enabled: bool | None = None) -> Progress:
    """``enabled=None``: show only when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichProgress(total, description) if enabled else NullProgress()
