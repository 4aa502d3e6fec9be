"""``ledger.sqlite``: an AOI's record of the scenes processed (table ``scenes``, one row per scene: ``done``
or ``no_overlap``) and of the runs (table ``runs``: started, finished or superseded, the date reached).

Every query the monitoring run makes is a method of :class:`Ledger`; writes happen in explicit
``BEGIN IMMEDIATE`` transactions (:meth:`Ledger.transaction`), with ``synchronous=FULL``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
from collections.abc import Iterable, Iterator

__all__ = ["Ledger", "open_ledger", "utc_now"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenes (
    scene_id TEXT NOT NULL, aoi_id TEXT NOT NULL, date TEXT NOT NULL, path TEXT NOT NULL,
    model_id TEXT NOT NULL, run_id TEXT NOT NULL, status TEXT NOT NULL, late INTEGER NOT NULL DEFAULT 0,
    observation TEXT, time TEXT NOT NULL, PRIMARY KEY (scene_id, aoi_id));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, aoi_id TEXT NOT NULL, started TEXT NOT NULL, finished TEXT,
    status TEXT NOT NULL, since TEXT, last_date TEXT, scenes INTEGER NOT NULL DEFAULT 0);
"""


def utc_now() -> str:
    """The ledger's (and the alerts') timestamps: UTC to the second, ``2021-03-04T05:06:07Z``."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def open_ledger(path: str | os.PathLike) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)  # explicit transactions
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(_SCHEMA)
    return con


class Ledger:
    """One AOI's ledger (``aoi_id``) over an open connection; :meth:`close` when done."""

    def __init__(self, path: str | os.PathLike, aoi_id: str) -> None:
        self.con = open_ledger(path)
        self.aoi_id = aoi_id

    def close(self) -> None:
        self.con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- scenes

    def scene_ids(self, statuses: Iterable[str]) -> set[str]:
        """Ids of the AOI's scenes recorded with one of ``statuses``."""
        st = tuple(statuses)
        sql = f"SELECT scene_id FROM scenes WHERE aoi_id=? AND status IN ({','.join('?' * len(st))})"
        return {r[0] for r in self.con.execute(sql, (self.aoi_id, *st))}

    def record_scene(self, scene_id: str, date: str, path: str, model_id: str, run_id: str, status: str,
                     late: bool, observation: str | None) -> None:
        """Insert (or replace) the AOI's row of ``scene_id``, stamped now (inside a :meth:`transaction`)."""
        self.con.execute("INSERT OR REPLACE INTO scenes (scene_id, aoi_id, date, path, model_id, run_id, status, "
                         "late, observation, time) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (scene_id, self.aoi_id, date, path, model_id, run_id, status, int(late), observation,
                          utc_now()))

    # -- runs

    def unfinished_runs(self) -> list[str]:
        """Run ids of the AOI's runs that never finished (crashed), oldest first."""
        return [r[0] for r in self.con.execute("SELECT run_id FROM runs WHERE aoi_id=? AND finished IS NULL "
                                               "ORDER BY rowid", (self.aoi_id,))]

    def last_finished_date(self) -> str | None:
        """The date the AOI's last finished run reached (``YYYY-MM-DD``), None if none did."""
        row = self.con.execute("SELECT last_date FROM runs WHERE aoi_id=? AND finished IS NOT NULL "
                               "ORDER BY rowid DESC LIMIT 1", (self.aoi_id,)).fetchone()
        return row[0] if row and row[0] else None

    def start_run(self, run_id: str, since: str | None) -> None:
        with self.transaction():
            self.con.execute("INSERT INTO runs (run_id, aoi_id, started, status, since) VALUES (?,?,?,?,?)",
                             (run_id, self.aoi_id, utc_now(), "running", since))

    def finish_run(self, run_id: str, last_date: str | None, n_scenes: int) -> None:
        """Mark ``run_id`` finished and every other unfinished run of the AOI superseded."""
        with self.transaction():
            self.con.execute("UPDATE runs SET finished=?, status='finished', last_date=?, scenes=? WHERE run_id=?",
                             (utc_now(), last_date, n_scenes, run_id))
            self.con.execute("UPDATE runs SET finished=?, status='superseded', last_date=? WHERE aoi_id=? AND "
                             "finished IS NULL", (utc_now(), last_date, self.aoi_id))
