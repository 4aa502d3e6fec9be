"""One AOI's run (:func:`run_aoi`): under the AOI's lock, apply every pending scene to the committed state,
in acquisition order, then deliver (changes file, report, STAC Item) and close the run in the ledger.

Commit protocol per scene (so a crash anywhere is recoverable): the observation raster, then
``alerts.gpkg`` and ``alerts_gfw.tif`` are written to temporary names and renamed into place, then
``state.tif`` (temp + ``os.replace``): that rename is *the* commit, because the state's tags list the scene
ids it includes; then the ledger row is written (one transaction).  On start the ledger is reconciled with
the state's applied list (a crash between the state rename and the ledger write loses nothing), and a scene
the state does not include is processed again from the committed state, giving identical results.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._util.atomic import atomic_write_text
from geoseg.errors import ConfigError, InputError, MonitorLockedError
from geoseg.io.output import folder_lock
from geoseg.io.warp import Grid
from geoseg.monitoring import state as ms
from geoseg.monitoring.alerts import (
    alert_totals,
    derive_alerts,
    merge_alerts,
    read_alert_layers,
    summary_row,
    write_alerts_gpkg,
    write_changes_geojson,
    write_gfw,
)
from geoseg.monitoring.config import AOI, MonitorConfig, Scene
from geoseg.monitoring.ledger import Ledger, utc_now
from geoseg.monitoring.observation import (
    aoi_mask,
    grid_for,
    observation_masks,
    observation_name,
    observe,
    read_observation,
    scene_overlaps,
    write_observation,
)
from geoseg.monitoring.state_file import Committed, fingerprint, read_state, write_state

__all__ = ["run_aoi", "aoi_lock", "CRASH_ENV", "ITEM_NAME"]

CRASH_ENV = "GEOSEG_MONITOR_CRASH_AFTER"
ITEM_NAME = "item.json"  # per-AOI STAC Item


# -- crash hook -----------------------------------------------------------------------------------------

_crash_counts: dict[str, int] = {}


def _crash_point(step: str) -> None:
    """Test hook: ``GEOSEG_MONITOR_CRASH_AFTER=step[:n]`` kills the process after the n-th ``step``."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != step:
        return
    _crash_counts[step] = _crash_counts.get(step, 0) + 1
    if _crash_counts[step] == int(n or 1):
        os._exit(86)


# -- the AOI folder ------------------------------------------------------------------------------------


#: What a run killed mid-write leaves in a monitoring folder (every write goes through _util.atomic).
STALE = (".*.tmp*",)


def monitor_lock(path: Path, wait: bool, subfolders: tuple[str, ...] = ()) -> AbstractContextManager[None]:
    """An exclusive lock on ``path`` (held by another run and not ``wait``: :class:`MonitorLockedError`);
    once held, a killed run's temporaries beside it (and in ``subfolders``) are removed."""

    def busy() -> MonitorLockedError:
        return MonitorLockedError(f"another geoseg monitor run holds {path}; it will pick up new scenes too, or "
                                  "rerun later or with --wait")

    return folder_lock(path.parent, path.name, STALE, wait=wait, busy=busy, subfolders=subfolders)


def aoi_lock(folder: Path, wait: bool) -> AbstractContextManager[None]:
    """The AOI folder's lock: one run at a time works on an AOI."""
    return monitor_lock(folder / ".lock", wait, subfolders=("observations",))


def _write_item(folder: Path, aoi_id: str, run_id: str) -> None:
    """The AOI's STAC Item (``item.json``), linked to the run-level ``OUT/catalog.json``."""
    from geoseg.delivery.stac import dumps, monitor_item

    atomic_write_text(folder / ITEM_NAME, dumps(monitor_item(folder, aoi_id=aoi_id, run_id=run_id,
                                                             updated=utc_now())))


# -- one AOI's run ---------------------------------------------------------------------------------------


@dataclass
class _AoiRun:
    """The working set of one AOI's run: its folder's paths, ledger, committed state and the result so far."""

    cfg: MonitorConfig
    aoi: AOI
    run_id: str
    folder: Path
    ledger: Ledger
    committed: Committed | None = None
    grid: Grid | None = None
    inside: np.ndarray | None = None
    since: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_dir(self) -> Path:
        return self.folder / "observations"

    @property
    def state_path(self) -> Path:
        return self.folder / "state.tif"

    @property
    def gpkg(self) -> Path:
        return self.folder / "alerts.gpkg"

    @property
    def gfw(self) -> Path:
        return self.folder / "alerts_gfw.tif"


def _load_committed(r: _AoiRun) -> None:
    """Read ``state.tif`` (if any), refuse one built with another config, and reconcile the ledger with it:
    a crash between the state rename and the ledger write left scenes applied but not recorded."""
    if not r.state_path.exists():
        return
    r.grid, r.committed = read_state(r.state_path)
    fp = fingerprint(r.cfg, r.aoi)
    if r.committed.fingerprint != fp:
        raise ConfigError(
            f"the state in {r.folder} was built with another config ({r.committed.fingerprint}; now {fp}): "
            "rules, forest classes, kind, model or the AOI changed. Use a new output folder, or delete "
            f"{r.folder} to rebuild it from the scenes")
    done = r.ledger.scene_ids(("done",))
    missing = [sid for sid in r.committed.applied if sid not in done]
    if not missing:
        return
    by_id = {s.id: s for s in r.cfg.scenes}
    with r.ledger.transaction():
        unfinished = r.ledger.unfinished_runs()
        run_id = unfinished[-1] if unfinished else r.run_id  # the crashed run applied them
        for sid in missing:
            s = by_id.get(sid)
            r.ledger.record_scene(sid, s.date.isoformat() if s else "", s.path if s else "", r.cfg.model_id,
                                  run_id, "done", sid in r.committed.late, observation_name(s) if s else None)


def _start(r: _AoiRun) -> None:
    """Record the run; changes are everything stamped by this run or an unfinished (crashed) one since the
    last finished run."""
    r.since = r.ledger.last_finished_date()
    r.ledger.start_run(r.run_id, r.since)


def _next_state(r: _AoiRun, c: Committed, grid: Grid, scene: Scene, obs: np.ndarray
                ) -> tuple[ms.PixelState, list[str], tuple[int, str] | None, bool]:
    """(state, applied ids, last key, late) after ``scene``: a late scene (older than the last applied one)
    replays every applied observation with it, in order; else one update of the committed state."""
    late = c.last_key is not None and scene.key < tuple(c.last_key)
    if not late:
        f, v = observation_masks(obs)
        return ms.update(c.state, scene.date, f, v, r.cfg.rules).state, c.applied + [scene.id], scene.key, False
    by_id = {s.id: s for s in r.cfg.scenes}
    missing = [sid for sid in c.applied if sid not in by_id]
    seq = sorted([by_id[sid] for sid in c.applied if sid in by_id] + [scene], key=lambda s: s.key)
    if missing:
        raise InputError(f"late scene {scene.id} needs a replay, but applied scenes {missing} are no "
                         "longer in the inventory; restore them")
    state = ms.initial_state((grid.height, grid.width))
    for s in seq:
        o = obs if s.id == scene.id else read_observation(r.obs_dir / observation_name(s))
        f, v = observation_masks(o)
        state = ms.update(state, s.date, f, v, r.cfg.rules).state
    return state, [s.id for s in seq], c.last_key, True


def _write_outputs(r: _AoiRun, grid: Grid, inside: np.ndarray, scene: Scene, obs: np.ndarray,
                   state: ms.PixelState, late: bool) -> tuple[int, int]:
    """``alerts.gpkg`` (alerts merged with the previous ones, the scene's summary row) and ``alerts_gfw.tif``;
    returns (new alerts, updated alerts)."""
    now = utc_now()
    prev_alerts, prev_summary = read_alert_layers(r.gpkg)
    alerts, n_new, n_upd = merge_alerts(prev_alerts, derive_alerts(r.aoi.id, state, grid, r.cfg.min_area_ha),
                                        r.cfg.model_id, r.run_id, now)
    summary = [row for row in prev_summary if row["scene_id"] != scene.id]
    summary.append(summary_row(r.aoi.id, scene, r.run_id, obs, inside, alerts, late))
    summary.sort(key=lambda row: (row["date"], row["scene_id"]))
    write_alerts_gpkg(r.gpkg, alerts, summary, grid)
    write_gfw(r.gfw, state, grid)
    return n_new, n_upd


def _apply(r: _AoiRun, scene: Scene) -> None:
    """Observe ``scene`` and commit it: observation, outputs, the state (the commit), the ledger row."""
    if r.grid is None:
        r.grid = grid_for(r.cfg, r.aoi, scene.path)
    grid = r.grid
    if r.committed is None:
        r.committed = Committed(ms.initial_state((grid.height, grid.width)), [], None, fingerprint(r.cfg, r.aoi))
    if r.inside is None:
        r.inside = aoi_mask(r.aoi, grid)
    c = r.committed
    obs = observe(r.cfg, r.aoi, grid, scene, r.folder)
    obs_path = r.obs_dir / observation_name(scene)
    write_observation(obs_path, obs, grid, scene)
    _crash_point("observation")

    state, applied, last_key, late = _next_state(r, c, grid, scene, obs)
    if late:
        r.result["late_scenes"].append(scene.id)
    # outputs first (temp + rename), then the state (the commit), then the ledger
    n_new, n_upd = _write_outputs(r, grid, r.inside, scene, obs, state, late)
    _crash_point("outputs")
    r.committed = Committed(state, applied, last_key, c.fingerprint, c.late + ((scene.id,) if late else ()))
    write_state(r.state_path, grid, r.committed)
    _crash_point("state")
    with r.ledger.transaction():
        r.ledger.record_scene(scene.id, scene.date.isoformat(), scene.path, r.cfg.model_id, r.run_id, "done",
                              late, obs_path.name)
    _crash_point("ledger")
    r.result["scenes_processed"].append(scene.id)
    r.result["alerts_new"] += n_new
    r.result["alerts_updated"] += n_upd


def _skip(r: _AoiRun, scene: Scene) -> None:
    """A scene that does not reach the AOI: recorded (``no_overlap``), not applied."""
    with r.ledger.transaction():
        r.ledger.record_scene(scene.id, scene.date.isoformat(), scene.path, r.cfg.model_id, r.run_id, "no_overlap",
                              False, None)
    r.result["skipped_no_overlap"].append(scene.id)


def _deliver(r: _AoiRun, unfinished: list[str]) -> tuple[Path | None, int]:
    """``changes_since_<date>.geojson`` (alerts stamped by this run or by unfinished, crashed, earlier runs),
    ``report.html``, then ``item.json`` (last: it records the others' checksums). Returns (changes file,
    alerts changed)."""
    runs = set(unfinished) | {r.run_id}
    alerts, _ = read_alert_layers(r.gpkg)
    changed = [a for a in alerts if a["run_id"] in runs]
    changes_file = None
    if r.committed is not None and r.grid is not None:
        tag = r.since.replace("-", "") if r.since else "start"
        changes_file = r.folder / f"changes_since_{tag}.geojson"
        write_changes_geojson(changes_file, changed, r.grid)
        from geoseg.delivery.report import write_monitor_report

        write_monitor_report(r.folder, aoi_id=r.aoi.id, run_id=r.run_id, pending=(ITEM_NAME,))
        _write_item(r.folder, r.aoi.id, r.run_id)
    return changes_file, len(changed)


def _finish(r: _AoiRun) -> None:
    c = r.committed
    last = ms.from_days(c.state.last_date) if c is not None else None
    r.ledger.finish_run(r.run_id, last.isoformat() if last else None, len(r.result["scenes_processed"]))


def _run_aoi_locked(cfg: MonitorConfig, aoi: AOI, run_id: str, folder: Path) -> dict[str, Any]:
    (folder / "observations").mkdir(exist_ok=True)  # aoi_lock removed a killed run's temporaries
    r = _AoiRun(cfg, aoi, run_id, folder, Ledger(folder / "ledger.sqlite", aoi.id))
    try:
        _load_committed(r)
        done = r.ledger.scene_ids(("done", "no_overlap"))
        pending = sorted((s for s in cfg.scenes if s.id not in done), key=lambda s: s.key)
        unfinished = r.ledger.unfinished_runs()
        r.result = {"aoi_id": aoi.id, "scenes_processed": [], "late_scenes": [], "skipped_no_overlap": [],
                    "alerts_new": 0, "alerts_updated": 0}
        if not pending and not unfinished:
            r.result.update(alert_totals(r.gpkg), status="nothing new", changes_file=None)
            return r.result
        _start(r)
        for scene in pending:
            if scene_overlaps(r.cfg, aoi, scene):
                _apply(r, scene)
            else:
                _skip(r, scene)
        changes_file, n_changed = _deliver(r, unfinished)
        _crash_point("changes")
        _finish(r)
        r.result.update(alert_totals(r.gpkg), status="ok" if r.result["scenes_processed"] else "nothing new",
                        changes_file=str(changes_file) if changes_file else None, alerts_changed=n_changed)
        return r.result
    finally:
        r.ledger.close()


def run_aoi(cfg: MonitorConfig, aoi: AOI, run_id: str, wait: bool = False) -> dict[str, Any]:
    """One AOI's run, under its lock (:class:`MonitorLockedError` if another run holds it and not ``wait``)."""
    folder = cfg.output / aoi.id
    with aoi_lock(folder, wait):
        return _run_aoi_locked(cfg, aoi, run_id, folder)
