"""``geoseg monitor run``: the scheduled, idempotent, crash-safe forest-loss monitoring job.

One run reads a YAML config (areas of interest, a scene inventory, forest classes, rules, an output
folder; :mod:`geoseg.monitoring.config`) and, per AOI, applies every scene not yet processed to the AOI's
per-pixel alert state (:mod:`geoseg.monitoring.state`), in acquisition order, then rewrites the AOI's
outputs (:mod:`geoseg.monitoring.run`).  See ``docs/monitor.md`` for the config, the outputs and the
guarantees.

Per AOI, in ``OUT/<aoi_id>/``::

    .lock                     fcntl lock: one run per AOI at a time
    ledger.sqlite             scenes (processed scenes) and runs tables (:mod:`~geoseg.monitoring.ledger`)
    state.tif                 PixelState arrays, one int32 band each, on the AOI grid; tags hold
                              last_date, n_observations, the applied scene ids (the commit record;
                              :mod:`~geoseg.monitoring.state_file`)
    observations/<key>.tif    per-scene observation (uint8: 0 non-forest, 1 forest, 255 not observed;
                              :mod:`~geoseg.monitoring.observation`)
    alerts.gpkg               layers ``alerts`` (default QGIS style: by confidence) and ``aoi_summary``
    alerts_gfw.tif            GFW date-confidence COG (uint16 conf*10000 + days since 2014-12-31)
    alerts_gfw.qml            its QGIS style (low orange, high red, no alert transparent)
    report.html               alert list, area by confidence, scenes applied (rewritten by each run)
    changes_since_<date>.geojson   RFC 7946 (WGS84): only the alerts new or changed by this run
                              (the alert outputs: :mod:`~geoseg.monitoring.alerts`)
    item.json                 STAC Item of the AOI's outputs (checksums), written after report.html

and in ``OUT/``: ``report.html`` (index of every AOI: alerts and area by confidence, links to the AOI
reports) and ``catalog.json`` (STAC Catalog of the AOI items), rewritten at the end of a run that
delivered anything.

The commit protocol per scene (a crash anywhere is recoverable) is described in :mod:`geoseg.monitoring.run`.

Test hook: ``GEOSEG_MONITOR_CRASH_AFTER=<step>[:<n>]`` makes the process ``os._exit(86)`` right after
the ``n``-th (default 1st) occurrence of ``step`` (``observation``, ``outputs``, ``state``,
``ledger``, ``changes``), to test crash recovery.  Never set it in production.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg._util.atomic import atomic_write_text
from geoseg.errors import ConfigError, MonitorLockedError, OutputError, ParameterError
from geoseg.io.warp import Grid, read_on_grid
from geoseg.monitoring.alerts import ALERT_FIELDS, SUMMARY_FIELDS, merge_alerts, write_changes_geojson
from geoseg.monitoring.config import AOI, MonitorConfig, Scene, load_config
from geoseg.monitoring.ledger import open_ledger
from geoseg.monitoring.observation import OBS_NODATA, aoi_mask, grid_for, observe
from geoseg.monitoring.patches import derive_alerts
from geoseg.monitoring.run import CRASH_ENV, ITEM_NAME, aoi_lock, monitor_lock, run_aoi
from geoseg.monitoring.state_file import STATE_BANDS, STATE_DTYPES, Committed, fingerprint, read_state, write_state

__all__ = ["MonitorConfig", "AOI", "Scene", "MonitorLockedError", "load_config", "run_monitor", "EXIT_LOCKED",
           "CRASH_ENV",
           # re-exported where geoseg.monitor (<= 0.1, now forwarding here) had them
           "ConfigError", "Grid", "read_on_grid", "grid_for", "aoi_mask", "observe", "OBS_NODATA", "Committed",
           "fingerprint", "read_state", "write_state", "STATE_BANDS", "STATE_DTYPES", "open_ledger",
           "ALERT_FIELDS", "SUMMARY_FIELDS", "derive_alerts", "merge_alerts", "write_changes_geojson",
           "aoi_lock", "run_aoi", "ITEM_NAME", "INDEX_NAME", "INDEX_LOCK"]

EXIT_LOCKED = MonitorLockedError.exit_code  # 75, EX_TEMPFAIL: another run holds an AOI's lock; try again later
INDEX_NAME = "report.html"  # run-level index: OUT/report.html (and the STAC Catalog OUT/catalog.json)
#: Guards OUT/catalog.json and OUT/report.html: runs on different AOIs rewrite them one at a time.
INDEX_LOCK = ".index.lock"


def _index_stale(cfg: MonitorConfig) -> bool:
    """``OUT/report.html`` is missing or older than an AOI's ``item.json`` (a run killed before its index)."""
    index = cfg.output / INDEX_NAME
    if not index.exists():
        return True
    t = index.stat().st_mtime_ns
    return any(p.stat().st_mtime_ns > t for a in cfg.aois if (p := cfg.output / a.id / ITEM_NAME).exists())


def _write_index(cfg: MonitorConfig, run_id: str) -> None:
    """``OUT/catalog.json`` (STAC Catalog of the AOI items), then ``OUT/report.html`` (every AOI's alerts and
    area by confidence, linking the AOI reports): rewritten when a run delivered something (or is missing)."""
    from geoseg.delivery.report import monitor_index_html
    from geoseg.delivery.stac import CATALOG_NAME, dumps, monitor_catalog

    # Under the index lock, each writer reads the AOI items as they are when it writes, so the last
    # index written includes every AOI run that finished before it (each such run writes one after).
    with monitor_lock(cfg.output / INDEX_LOCK, wait=True):  # and removes a killed run's temporaries
        ids = [a.id for a in cfg.aois]
        atomic_write_text(cfg.output / CATALOG_NAME, dumps(monitor_catalog(cfg.output, ids)))
        atomic_write_text(cfg.output / INDEX_NAME, monitor_index_html(cfg.output, ids, run_id=run_id))


def _selected(cfg: MonitorConfig, aoi_ids: Sequence[str] | None) -> list[AOI]:
    aois = cfg.aois
    if aoi_ids:
        unknown = set(aoi_ids) - {a.id for a in aois}
        if unknown:
            raise ParameterError(f"unknown AOI id(s) {', '.join(sorted(unknown))}; ids: "
                                 f"{', '.join(a.id for a in aois)}")
        aois = [a for a in aois if a.id in set(aoi_ids)]
    return aois


def _summary(cfg: MonitorConfig, run_id: str, results: list[dict[str, Any]], locked: list[str], t0: float
             ) -> dict[str, Any]:
    processed = len({sid for r in results for sid in r.get("scenes_processed", [])})
    pairs = sum(len(r.get("scenes_processed", [])) for r in results)
    # "locked": every AOI of the run was locked by another live run, so this one did nothing (exit 75);
    # "partial": the AOIs it could lock are done, the others are being processed by that other run (exit 0)
    status = ("locked" if len(locked) == len(results) else "partial") if locked else (
        "ok" if processed else "nothing new")
    messages = {"locked": f"locked by another run: {', '.join(locked)}",
                "partial": f"{processed} scene(s) processed; skipped (locked by another run): {', '.join(locked)}",
                "ok": f"{processed} scene(s) processed", "nothing new": "nothing new"}
    return {
        "status": status,
        "message": messages[status],
        "run_id": run_id,
        "config": str(cfg.path),
        "scenes_in_inventory": len(cfg.scenes),
        "scenes_processed": processed,  # distinct scenes applied to at least one AOI
        "aoi_scenes_processed": pairs,  # (AOI, scene) pairs
        "late_scenes": sum(len(r.get("late_scenes", [])) for r in results),
        "alerts_new": sum(r.get("alerts_new", 0) for r in results),
        "alerts_updated": sum(r.get("alerts_updated", 0) for r in results),
        "alert_area_ha": round(sum(r.get("alert_area_ha", 0.0) for r in results), 4),
        "locked_aois": locked,
        "aois": results,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run_monitor(config: str | os.PathLike | MonitorConfig, *, wait: bool = False,
                aoi_ids: Sequence[str] | None = None, output: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the job once; returns the summary (``status``: ``ok``, ``nothing new``, ``partial``: some AOIs were
    skipped because another live run holds their lock and the rest are done, or ``locked``: every AOI was).
    ``output`` replaces the config's ``output`` folder (``geoseg monitor run --output``)."""
    t0 = time.perf_counter()
    cfg = config if isinstance(config, MonitorConfig) else load_config(config)
    if output is not None:
        cfg = dataclasses.replace(cfg, output=Path(output))
    try:
        cfg.output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder {cfg.output} ({e.strerror}); fix 'output'") from None
    aois = _selected(cfg, aoi_ids)
    run_id = f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    results: list[dict[str, Any]] = []
    locked: list[str] = []
    for aoi in aois:
        try:
            results.append(run_aoi(cfg, aoi, run_id, wait=wait))
        except MonitorLockedError as e:
            locked.append(aoi.id)
            results.append({"aoi_id": aoi.id, "status": "locked", "message": str(e)})
    if any(r.get("changes_file") for r in results) or _index_stale(cfg):
        _write_index(cfg, run_id)
    return _summary(cfg, run_id, results, locked, t0)
