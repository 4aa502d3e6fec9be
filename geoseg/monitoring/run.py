"""One AOI's run (:func:`run_aoi`): under the AOI's lock, apply every pending scene to the committed state,
in acquisition order, then deliver (changes file, report, STAC Item) and close the run in the ledger.

Commit protocol per scene (so a crash anywhere is recoverable): the observation raster, then
``alerts.gpkg`` and ``alerts_gfw.tif`` are written to temporary names and renamed into place, then
``state.tif`` (temp + ``os.replace``): that rename is *the* commit, because the state's tags list the scene
ids it includes; then the ledger row is written (one transaction).  On start the ledger is reconciled with
the state's applied list (a crash between the state rename and the ledger write loses nothing), and a scene
the state does not include is processed again from the committed state, giving identical results.

Memory: a scene is applied in blocks of :data:`BLOCK_SIZE` pixels (observation, state, GFW raster and alert
patches), so it does not grow with the AOI (docs/monitor.md, "How it scales").
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg._util.atomic import atomic_write_text
from geoseg.errors import ConfigError, InputError, MonitorLockedError
from geoseg.io.grid import BlockGrid
from geoseg.io.output import folder_lock
from geoseg.io.raster import configure_gdal_cache
from geoseg.io.warp import Grid
from geoseg.monitoring import state as ms
from geoseg.monitoring.alerts import (
    Patch,
    alert_totals,
    gfw_writer,
    merge_alerts,
    patch_alerts,
    read_alert_layers,
    summary_row,
    write_alerts_gpkg,
    write_changes_geojson,
    write_gfw_style,
)
from geoseg.monitoring.config import AOI, MonitorConfig, Scene
from geoseg.monitoring.ledger import Ledger, utc_now
from geoseg.monitoring.observation import (
    grid_for,
    observation_masks,
    observation_name,
    observe_blocks,
    scene_overlaps,
)
from geoseg.monitoring.patches import PatchCollector
from geoseg.monitoring.rasters import TifBlocks
from geoseg.monitoring.state_file import Committed, fingerprint, read_state, read_state_block, state_block, state_writer

__all__ = ["run_aoi", "aoi_lock", "CRASH_ENV", "ITEM_NAME", "BLOCK_SIZE"]

#: A scene is applied to the AOI in blocks of this many pixels a side (a multiple of the GeoTIFFs' 256 px
#: tiles; ``io.grid.check_block_size``): the observation, the state, the GFW raster and the alert patches
#: are read, updated and written one block at a time, so memory does not grow with the AOI.
BLOCK_SIZE = 1024

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


def _next_commit(r: _AoiRun, c: Committed, scene: Scene) -> tuple[list[Scene], Committed, bool]:
    """(the scenes to apply, in order, the commit record after ``scene``, late): a late scene (older than the
    last applied one) replays every applied observation with it, in order, from the initial state; else one
    update of the committed state."""
    d = ms.to_days(scene.date)
    late = c.last_key is not None and scene.key < tuple(c.last_key)
    if not late:
        return [scene], Committed(c.applied + [scene.id], scene.key, c.fingerprint, c.late,
                                  max(c.last_date, d), c.n_observations + 1), False
    by_id = {s.id: s for s in r.cfg.scenes}
    missing = [sid for sid in c.applied if sid not in by_id]
    if missing:
        raise InputError(f"late scene {scene.id} needs a replay, but applied scenes {missing} are no "
                         "longer in the inventory; restore them")
    seq = sorted([by_id[sid] for sid in c.applied] + [scene], key=lambda s: s.key)
    last = max(ms.to_days(s.date) for s in seq)
    return seq, Committed([s.id for s in seq], c.last_key, c.fingerprint, c.late + (scene.id,), last, len(seq)), True


def _update_blocks(r: _AoiRun, c: Committed, blocks: BlockGrid, seq: list[Scene], late: bool,
                   outs: tuple[TifBlocks, TifBlocks], patches: PatchCollector) -> None:
    """Block by block: the committed state (or the initial one, for a replay), the observations of ``seq``
    applied in order, the new state and GFW blocks written, the alert patches collected."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    state_out, gfw_out = outs
    with ExitStack() as stack:
        old = stack.enter_context(rasterio.open(r.state_path)) if c.applied and not late else None
        observations = [stack.enter_context(rasterio.open(r.obs_dir / observation_name(s))) for s in seq]
        for i in range(len(blocks)):
            w = blocks.window(i)
            state = read_state_block(old, c, w) if old is not None else ms.initial_state((w.height, w.width))
            for s, src in zip(seq, observations):
                f, v = observation_masks(src.read(1, window=RioWindow(w.col_off, w.row_off, w.width, w.height)))
                state = ms.update(state, s.date, f, v, r.cfg.rules).state
            state_out.write(w, state_block(state))
            gfw_out.write(w, ms.gfw_encode(state)[None])
            patches.add(i, state)


def _write_outputs(r: _AoiRun, grid: Grid, scene: Scene, patches: list[Patch], observed: tuple[int, int],
                   late: bool) -> tuple[int, int]:
    """``alerts.gpkg``: alerts merged with the previous ones, the scene's summary row (``observed``: observed
    and AOI pixels); returns (new alerts, updated alerts)."""
    now = utc_now()
    prev_alerts, prev_summary = read_alert_layers(r.gpkg)
    alerts, n_new, n_upd = merge_alerts(prev_alerts, patch_alerts(r.aoi.id, patches, grid, r.cfg.min_area_ha),
                                        r.cfg.model_id, r.run_id, now)
    summary = [row for row in prev_summary if row["scene_id"] != scene.id]
    summary.append(summary_row(r.aoi.id, scene, r.run_id, *observed, alerts, late))
    summary.sort(key=lambda row: (row["date"], row["scene_id"]))
    write_alerts_gpkg(r.gpkg, alerts, summary, grid)
    return n_new, n_upd


def _apply(r: _AoiRun, scene: Scene) -> None:
    """Observe ``scene`` and commit it: observation, outputs, the state (the commit), the ledger row.
    Block by block (:data:`BLOCK_SIZE`): the observation is written first, then one pass over the blocks
    writes the new state and the GFW raster to temporaries and collects the alert patches."""
    if r.grid is None:
        r.grid = grid_for(r.cfg, r.aoi, scene.path)
    grid = r.grid
    if r.committed is None:
        r.committed = Committed([], None, fingerprint(r.cfg, r.aoi))
    c = r.committed
    blocks = BlockGrid(grid.height, grid.width, BLOCK_SIZE)
    obs_path = r.obs_dir / observation_name(scene)
    observed = observe_blocks(obs_path, r.cfg, r.aoi, grid, scene, r.folder, blocks)
    _crash_point("observation")

    seq, new, late = _next_commit(r, c, scene)
    if late:
        r.result["late_scenes"].append(scene.id)
    patches = PatchCollector(blocks)
    # outputs first (temp + rename), then the state (the commit), then the ledger
    with state_writer(r.state_path, grid, new) as state_out, gfw_writer(r.gfw, grid) as gfw_out:
        _update_blocks(r, c, blocks, seq, late, (state_out, gfw_out), patches)
        n_new, n_upd = _write_outputs(r, grid, scene, patches.finish(), observed, late)
        gfw_out.publish()
        write_gfw_style(r.gfw)
        _crash_point("outputs")
        state_out.publish()
    r.committed = new
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
    last = ms.from_days(c.last_date) if c is not None else None
    r.ledger.finish_run(r.run_id, last.isoformat() if last else None, len(r.result["scenes_processed"]))


def _run_aoi_locked(cfg: MonitorConfig, aoi: AOI, run_id: str, folder: Path) -> dict[str, Any]:
    (folder / "observations").mkdir(exist_ok=True)  # aoi_lock removed a killed run's temporaries
    configure_gdal_cache()  # blocks written and read stay within GDAL's capped cache
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
