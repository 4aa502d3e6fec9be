"""``state.tif``: an AOI's committed :class:`~geoseg.monitoring.state.PixelState`, one int32 band per array on
the AOI grid.  Its tags are the commit record: the applied scene ids (in application order), the last scene
key, the late (replayed) scene ids and the config fingerprint the state was built with.  Renaming a new
``state.tif`` into place is *the* commit of a scene (see :mod:`geoseg.monitoring.run`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.io.warp import Grid
from geoseg.monitoring import state as ms
from geoseg.monitoring.config import AOI, MonitorConfig
from geoseg.monitoring.rasters import write_tif

__all__ = ["STATE_BANDS", "STATE_DTYPES", "Committed", "fingerprint", "read_state", "write_state"]

STATE_BANDS = ("baseline", "confidence", "first_loss", "last_loss", "n_loss", "n_forest_again", "last_clear")
STATE_DTYPES = {"baseline": np.uint8, "confidence": np.uint8, "first_loss": np.int32, "last_loss": np.int32,
                "n_loss": np.uint16, "n_forest_again": np.uint8, "last_clear": np.int32}


@dataclass
class Committed:
    state: ms.PixelState
    applied: list[str]  # scene ids, in application order
    last_key: tuple[int, str] | None
    fingerprint: str = ""
    late: tuple[str, ...] = ()  # applied scene ids that arrived late (replayed)


def fingerprint(cfg: MonitorConfig, aoi: AOI) -> str:
    """What the state depends on besides the scenes: rules, forest classes, input kind, model, AOI shape."""
    doc = {"rules": [cfg.rules.confirm_days, cfg.rules.reject_after, cfg.rules.new_event_days],
           "forest": [str(f) for f in cfg.forest], "kind": cfg.kind, "band": cfg.band, "model_id": cfg.model_id,
           "aoi": hashlib.sha1(aoi.geometry.wkb + aoi.crs.to_wkt().encode()).hexdigest()}
    return json.dumps(doc, sort_keys=True)


def read_state(path: Path) -> tuple[Grid, Committed]:
    import rasterio

    with rasterio.open(path) as src:
        data = src.read()
        tags = src.tags()
        grid = Grid(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
    arrays = {name: data[i].astype(STATE_DTYPES[name]) for i, name in enumerate(STATE_BANDS)}
    st = ms.PixelState(**arrays, last_date=int(tags["GEOSEG_LAST_DATE"]),
                       n_observations=int(tags["GEOSEG_N_OBSERVATIONS"]))
    lk = json.loads(tags.get("GEOSEG_LAST_KEY", "null"))
    return grid, Committed(st, json.loads(tags["GEOSEG_APPLIED"]), tuple(lk) if lk else None,
                           tags.get("GEOSEG_CONFIG", ""), tuple(json.loads(tags.get("GEOSEG_LATE", "[]"))))


def write_state(path: Path, grid: Grid, c: Committed) -> None:
    arr = np.stack([c.state.arrays()[n].astype(np.int32) for n in STATE_BANDS])
    tags = {"GEOSEG_PRODUCT": "monitor_state", "GEOSEG_LAST_DATE": str(c.state.last_date),
            "GEOSEG_N_OBSERVATIONS": str(c.state.n_observations), "GEOSEG_APPLIED": json.dumps(c.applied),
            "GEOSEG_LAST_KEY": json.dumps(list(c.last_key) if c.last_key else None),
            "GEOSEG_CONFIG": c.fingerprint, "GEOSEG_LATE": json.dumps(list(c.late))}
    write_tif(path, arr, grid, "int32", descriptions=STATE_BANDS, tags=tags)
