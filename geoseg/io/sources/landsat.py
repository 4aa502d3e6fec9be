"""Landsat 8/9 Collection 2 Level-2 folders (``*_SR_B1.TIF`` ... ``*_SR_B7.TIF`` and ``*_MTL.txt``),
read as one stacked VRT with the MTL's surface-reflectance scale (2.75e-05) and offset (-0.2).

Cloud mask: ``*_QA_PIXEL.TIF`` (the CFMask bits of Collection 2: 1 dilated cloud, 2 cirrus, 3 cloud,
4 cloud shadow; bit 0 fill is already the bands' nodata 0), on the bands' 30 m grid; None without it."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from geoseg.errors import NotAProductError
from geoseg.io.clouds import QA_PIXEL_MASKED, CloudMask
from geoseg.io.sources.bands import LANDSAT_SR_BANDS
from geoseg.io.sources.scene import SceneSource, dataset_tags, select_bands
from geoseg.io.sources.vrt import BandFile, mask_vrt, stack_vrt

_SR_FILE = re.compile(r"_(SR_B[1-7])\.TIF$", re.IGNORECASE)
_QA_FILE = re.compile(r"_QA_PIXEL\.TIF$", re.IGNORECASE)
_MTL_LINE = re.compile(r'^\s*([A-Z0-9_]+)\s*=\s*"?([^"]*)"?\s*$')
_SR_GROUP = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"
SR_SCALE = 2.75e-05
SR_OFFSET = -0.2


def _mtl(p: Path) -> Path | None:
    hits = sorted(p.glob("*_MTL.txt"))
    return hits[0] if hits else None


def is_landsat(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Collection 2 Level-2 MTL and SR band files."""
    return path.is_dir() and _mtl(path) is not None and any(_SR_FILE.search(f.name) for f in path.iterdir())


def _parse_mtl(mtl: Path) -> dict[str, str]:
    """KEY -> value, and GROUP/KEY -> value for the innermost group (the Level-1 group repeats the
    REFLECTANCE_* keys with TOA values)."""
    out: dict[str, str] = {}
    group = ""
    for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := _MTL_LINE.match(line):
            key, value = m.group(1), m.group(2)
            if key == "GROUP":
                group = value
            elif key != "END_GROUP":
                out.setdefault(key, value)
                out[f"{group}/{key}"] = value
    return out


def _float(mtl: dict[str, str], key: str, default: float, origin: str) -> float:
    try:
        return float(mtl.get(key, default))
    except ValueError:
        raise NotAProductError(f"{origin}: unreadable {key} in the MTL file") from None


def read_landsat(path: str | os.PathLike, bands: Sequence[str] | None = None) -> SceneSource:
    """A Landsat 8/9 C2 L2 folder as a :class:`SceneSource` (surface reflectance bands only)."""
    p = Path(path)
    origin = str(p)
    mtl_path = _mtl(p)
    if mtl_path is None:
        raise NotAProductError(f"{origin}: no *_MTL.txt: not a Landsat Collection 2 folder")
    mtl = _parse_mtl(mtl_path)
    files = {LANDSAT_SR_BANDS[m.group(1).upper()]: (m.group(1).upper(), f)
             for f in sorted(p.iterdir()) if (m := _SR_FILE.search(f.name))}
    chosen = select_bands(list(files), bands, origin, "this Landsat folder")
    band_files = []
    for name in chosen:
        sr, f = files[name]
        n = sr[-1]
        scale = _float(mtl, f"{_SR_GROUP}/REFLECTANCE_MULT_BAND_{n}", SR_SCALE, origin)
        offset = _float(mtl, f"{_SR_GROUP}/REFLECTANCE_ADD_BAND_{n}", SR_OFFSET, origin)
        band_files.append(BandFile(name, str(f.resolve()), 1, scale, offset, 0.0))
    spacecraft = mtl.get("SPACECRAFT_ID", "").upper()
    sensor = "landsat-9" if "9" in spacecraft else "landsat-8" if "8" in spacecraft else None
    date, time = mtl.get("DATE_ACQUIRED"), mtl.get("SCENE_CENTER_TIME")
    acquired = f"{date}T{time}" if date and time else date
    meta = {"product_id": mtl.get("LANDSAT_PRODUCT_ID"), "cloud_cover": mtl.get("CLOUD_COVER"),
            "wrs_path": mtl.get("WRS_PATH"), "wrs_row": mtl.get("WRS_ROW")}
    metadata = {k: v for k, v in meta.items() if v}
    tags = dataset_tags(sensor, "L2", "surface_reflectance", acquired, metadata)
    xml = stack_vrt(band_files, tags, origin)
    qa = next((f for f in sorted(p.iterdir()) if _QA_FILE.search(f.name)), None)
    mask = None if qa is None else CloudMask(mask_vrt([BandFile("QA_PIXEL", str(qa.resolve()))], xml, origin),
                                             "qa_pixel", str(qa.resolve()), masked_bits=QA_PIXEL_MASKED)
    return SceneSource(xml, origin, tuple(chosen), sensor, "L2", "surface_reflectance", acquired, metadata, mask)
