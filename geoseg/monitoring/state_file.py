"""``state.tif``: an AOI's committed :class:`~geoseg.monitoring.state.PixelState`, one int32 band per array on
the AOI grid, read and written block by block.  Its tags are the commit record: the applied scene ids (in
application order), the last scene key, the late (replayed) scene ids, the config fingerprint the state was
built with, the last date and the number of observations.  Renaming a new ``state.tif`` into place is *the*
commit of a scene (see :mod:`geoseg.monitoring.run`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.io.grid import Window
from geoseg.io.warp import Grid
from geoseg.monitoring import state as ms
from geoseg.monitoring.config import AOI, MonitorConfig
from geoseg.monitoring.rasters import TifBlocks, write_tif

__all__ = ["STATE_BANDS", "STATE_DTYPES", "Committed", "fingerprint", "read_state", "read_state_block",
           "state_writer", "write_state"]

STATE_BANDS = ("baseline", "confidence", "first_loss", "last_loss", "n_loss", "n_forest_again", "last_clear")
STATE_DTYPES = {"baseline": np.uint8, "confidence": np.uint8, "first_loss": np.int32, "last_loss": np.int32,
                "n_loss": np.uint16, "n_forest_again": np.uint8, "last_clear": np.int32}


@dataclass
class Committed:
    """The commit record of a state (its arrays stay on disk, read by block: :func:`read_state_block`)."""

    applied: list[str]  # scene ids, in application order
    last_key: tuple[int, str] | None
    fingerprint: str = ""
    late: tuple[str, ...] = ()  # applied scene ids that arrived late (replayed)
    last_date: int = ms.NONE  # the state's latest observation date (days)
    n_observations: int = 0


def fingerprint(cfg: MonitorConfig, aoi: AOI) -> str:
    """What the state depends on besides the scenes: rules, forest classes, input kind, model, AOI shape."""
    doc = {"rules": [cfg.rules.confirm_days, cfg.rules.reject_after, cfg.rules.new_event_days],
           "forest": [str(f) for f in cfg.forest], "kind": cfg.kind, "band": cfg.band, "model_id": cfg.model_id,
           "aoi": hashlib.sha1(aoi.geometry.wkb + aoi.crs.to_wkt().encode()).hexdigest()}
    return json.dumps(doc, sort_keys=True)


def read_state(path: Path) -> tuple[Grid, Committed]:
    """The grid and the commit record of ``state.tif`` (tags only: no pixel is read)."""
    import rasterio

    with rasterio.open(path) as src:
        tags = src.tags()
        grid = Grid(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
    lk = json.loads(tags.get("GEOSEG_LAST_KEY", "null"))
    return grid, Committed(json.loads(tags["GEOSEG_APPLIED"]), tuple(lk) if lk else None,
                           tags.get("GEOSEG_CONFIG", ""), tuple(json.loads(tags.get("GEOSEG_LATE", "[]"))),
                           int(tags["GEOSEG_LAST_DATE"]), int(tags["GEOSEG_N_OBSERVATIONS"]))


def read_state_block(src: Any, c: Committed, window: Window) -> ms.PixelState:
    """The state's pixels in ``window``, from the open ``state.tif`` dataset ``src``."""
    from rasterio.windows import Window as RioWindow

    data = src.read(window=RioWindow(window.col_off, window.row_off, window.width, window.height))
    arrays = {name: data[i].astype(STATE_DTYPES[name]) for i, name in enumerate(STATE_BANDS)}
    return ms.PixelState(**arrays, last_date=c.last_date, n_observations=c.n_observations)


def _tags(c: Committed) -> dict[str, str]:
    return {"GEOSEG_PRODUCT": "monitor_state", "GEOSEG_LAST_DATE": str(c.last_date),
            "GEOSEG_N_OBSERVATIONS": str(c.n_observations), "GEOSEG_APPLIED": json.dumps(c.applied),
            "GEOSEG_LAST_KEY": json.dumps(list(c.last_key) if c.last_key else None),
            "GEOSEG_CONFIG": c.fingerprint, "GEOSEG_LATE": json.dumps(list(c.late))}


def state_block(state: ms.PixelState) -> np.ndarray:
    """The (7, h, w) int32 bands of a state (block)."""
    return np.stack([state.arrays()[n].astype(np.int32) for n in STATE_BANDS])


def state_writer(path: Path, grid: Grid, c: Committed) -> TifBlocks:
    """A new ``state.tif`` for the commit record ``c``, written block by block (``write(window,
    state_block(state))``); its :meth:`~geoseg.monitoring.rasters.TifBlocks.publish` is the commit."""
    return TifBlocks(path, grid, len(STATE_BANDS), "int32", descriptions=STATE_BANDS, tags=_tags(c))


def write_state(path: Path, grid: Grid, c: Committed, state: ms.PixelState) -> None:
    """A whole ``state.tif`` at once (for states that fit in memory, e.g. in tests)."""
    write_tif(path, state_block(state), grid, "int32", descriptions=STATE_BANDS, tags=_tags(c))
