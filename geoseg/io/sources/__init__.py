"""Product readers: a Sentinel-2 SAFE (folder or .zip), a STAC Item (local JSON, one asset per band) or
a Landsat Collection 2 Level-2 folder, each turned into ONE GDAL VRT stacked on the finest band's grid
(coarser bands resampled bilinearly at read time), with per-band scale/offset to the physical quantity.

``open_source(path)`` returns a :class:`SceneSource`, or None for a plain raster (read as today).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

from geoseg.errors import NotAProductError
from geoseg.io.sources.bands import BAND_ID, SENTINEL2_BANDS, band_order, canonical_band
from geoseg.io.sources.landsat import is_landsat, read_landsat
from geoseg.io.sources.scene import SceneSource
from geoseg.io.sources.sentinel2 import is_safe, read_safe
from geoseg.io.sources.stac import read_stac_item

__all__ = ["BAND_ID", "SENTINEL2_BANDS", "SceneSource", "band_order", "canonical_band", "open_source",
           "read_landsat", "read_safe", "read_stac_item"]


def _is_stac_json(p: Path) -> bool:
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAProductError(f"{p}: not a readable JSON file ({exc}); pass a STAC Item JSON or a raster") \
            from None
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise NotAProductError(f"{p}: a JSON of type {kind!r} is not a STAC Item (type 'Feature'); "
                               "pass one Item of the collection")
    return True


def open_source(path: str | os.PathLike, bands: Sequence[str] | None = None) -> SceneSource | None:
    """Read the product at ``path`` as a :class:`SceneSource`, or None when it is a plain raster.

    ``bands`` (any aliases) selects and orders the stacked bands; default: every band the product has,
    in Sentinel-2 order.  Raises MissingBandError (a band ``bands`` asks for is missing),
    NotAProductError (a .zip that is no SAFE, a JSON that is no STAC Item), UnreadableBandError and
    GridMismatchError, each with a one-line message.
    """
    p = Path(path)
    if is_safe(p):
        return read_safe(p, bands)
    if p.suffix.lower() == ".zip" and p.is_file():
        if zipfile.is_zipfile(p):
            raise NotAProductError(f"{p}: this zip holds no Sentinel-2 .SAFE product (no MTD_MSIL1C.xml or "
                                   "MTD_MSIL2A.xml); unzip it and pass the raster inside")
        raise NotAProductError(f"{p}: not a readable zip file (truncated download?); download it again")
    if _is_stac_json(p):
        return read_stac_item(p, bands)
    if is_landsat(p):
        return read_landsat(p, bands)
    return None
