"""Sentinel-2 L1C/L2A SAFE products (a ``.SAFE`` folder or its ``.zip``), read as one stacked VRT.

Band files: ``GRANULE/*/IMG_DATA/*_B02.jp2`` (L1C) or ``GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2`` (L2A;
the finest resolution a band comes in is used).  Product metadata (``MTD_MSIL1C.xml`` /
``MTD_MSIL2A.xml``): PROCESSING_BASELINE, QUANTIFICATION_VALUE (L2A: BOA_QUANTIFICATION_VALUE),
RADIO_ADD_OFFSET (L2A: BOA_ADD_OFFSET) per band_id, PRODUCT_START_TIME, SPACECRAFT_NAME and
Cloud_Coverage_Assessment.  Each VRT band: scale = 1/quantification, offset = add_offset/quantification,
nodata 0; the 20 m and 60 m bands are resampled bilinearly onto the 10 m grid at read time.

Cloud mask (geoseg.io.clouds), the first the product has: the L2A Scene Classification
``GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2``; the L1C ``GRANULE/*/QI_DATA/MSK_CLASSI_B00.jp2`` (baseline
>= 04.00: band 1 opaque clouds, band 2 cirrus; band 3 snow/ice is not used); the L1C vector mask
``GRANULE/*/QI_DATA/MSK_CLOUDS_B00.gml`` (before 04.00: OPAQUE and CIRRUS polygons).  Each resampled
NEAREST onto the scene's grid; none of them: ``cloud_mask`` is None.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio
from rasterio.crs import CRS

from geoseg.errors import GridMismatchError, NotAProductError
from geoseg.io.clouds import GML_KEY, SCL_MASKED, CloudMask, gml_polygons
from geoseg.io.sources.bands import BAND_ID, SENTINEL2_BANDS, canonical_band
from geoseg.io.sources.scene import SceneSource, dataset_tags, select_bands
from geoseg.io.sources.vrt import BandFile, mask_vrt, stack_vrt

_MTD = re.compile(r"(?:^|/)(MTD_MSIL(1C|2A)\.xml)$")
_BAND_FILE = re.compile(r"(?:^|/)GRANULE/[^/]+/IMG_DATA/(?:R(\d\d)m/)?[^/]*_(B\d\d|B8A)(?:_(\d\d)m)?\.jp2$",
                        re.IGNORECASE)
_TILE = re.compile(r"_T(\d\d[A-Z]{3})_")
_SCL_FILE = re.compile(r"(?:^|/)GRANULE/[^/]+/IMG_DATA/R(\d\d)m/[^/]*_SCL_\d\dm\.jp2$", re.IGNORECASE)
_CLASSI_FILE = re.compile(r"(?:^|/)GRANULE/[^/]+/QI_DATA/MSK_CLASSI_B00\.jp2$", re.IGNORECASE)
# compact naming MSK_CLOUDS_B00.gml; products of 2016 name it S2A_OPER_MSK_CLOUDS_<...>_B00_MSIL1C.gml
_CLOUDS_GML = re.compile(r"(?:^|/)GRANULE/[^/]+/QI_DATA/(?:[^/]*_)?MSK_CLOUDS_(?:[^/]*_)?B00(?:_MSIL1C)?\.gml$",
                         re.IGNORECASE)


@dataclass(frozen=True)
class _Safe:
    origin: str
    prefix: str  # GDAL path of the SAFE root, ending in "/"
    level: str  # "L1C" | "L2A"
    mtd: bytes
    members: tuple[str, ...]  # file paths relative to the root


def _zip_safe(p: Path) -> _Safe | None:
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            hits = [(n, m) for n in names if (m := _MTD.search(n))]
            if not hits:
                return None
            name, m = min(hits, key=lambda h: h[0].count("/"))
            root = name[: -len(m.group(1))]
            mtd = zf.read(name)
    except (OSError, zipfile.BadZipFile):
        return None
    members = tuple(n[len(root):] for n in names if n.startswith(root) and not n.endswith("/"))
    return _Safe(str(p), f"/vsizip/{p.resolve()}/{root}", "L" + m.group(2), mtd, members)


def _dir_safe(p: Path) -> _Safe | None:
    for level in ("1C", "2A"):
        mtd = p / f"MTD_MSIL{level}.xml"
        if mtd.is_file():
            members = tuple(str(f.relative_to(p)).replace(os.sep, "/") for f in p.rglob("*") if f.is_file())
            return _Safe(str(p), f"{p.resolve()}/", f"L{level}", mtd.read_bytes(), members)
    return None


def is_safe(path: Path) -> bool:
    """Whether ``path`` is a SAFE folder (or a folder named ``*.SAFE``) or a zip holding one."""
    if path.is_dir():
        return path.suffix.upper() == ".SAFE" or any((path / f"MTD_MSIL{lv}.xml").is_file() for lv in ("1C", "2A"))
    return path.suffix.lower() == ".zip" and zipfile.is_zipfile(path) and _zip_safe(path) is not None


def _locate(path: Path) -> _Safe:
    safe = _dir_safe(path) if path.is_dir() else _zip_safe(path)
    if safe is None:
        raise NotAProductError(f"{path}: not a Sentinel-2 SAFE product (no MTD_MSIL1C.xml or MTD_MSIL2A.xml "
                               "at its root); pass the .SAFE folder or the zip as downloaded")
    return safe


def _fields(mtd: bytes, origin: str) -> dict[str, list[tuple[dict[str, str], str]]]:
    """Every element of the metadata by local tag name: [(attributes, text), ...]."""
    try:
        root = ET.fromstring(mtd)
    except ET.ParseError as exc:
        raise NotAProductError(f"{origin}: the product metadata is not valid XML ({exc}); "
                               "download the product again") from None
    out: dict[str, list[tuple[dict[str, str], str]]] = {}
    for el in root.iter():
        out.setdefault(el.tag.rsplit("}", 1)[-1], []).append((dict(el.attrib), (el.text or "").strip()))
    return out


def _first(fields: dict[str, list[tuple[dict[str, str], str]]], *tags: str) -> str | None:
    for tag in tags:
        for _, text in fields.get(tag, []):
            if text:
                return text
    return None


def _radiometry(fields: dict, level: str, origin: str) -> tuple[float, dict[int, float]]:
    """(quantification value, {band_id: additive offset}) of the product."""
    q_tag, off_tag = ("QUANTIFICATION_VALUE", "RADIO_ADD_OFFSET") if level == "L1C" else \
        ("BOA_QUANTIFICATION_VALUE", "BOA_ADD_OFFSET")
    q = _first(fields, q_tag)
    try:
        quant = float(q) if q is not None else 10000.0
        offsets = {int(a["band_id"]): float(t) for a, t in fields.get(off_tag, []) if "band_id" in a}
    except (KeyError, ValueError):
        raise NotAProductError(f"{origin}: unreadable {q_tag}/{off_tag} in the product metadata") from None
    if quant <= 0:
        raise NotAProductError(f"{origin}: {q_tag} is {quant}; the product metadata is damaged")
    return quant, offsets


def _band_files(safe: _Safe) -> dict[str, str]:
    """canonical band name -> member path of its finest-resolution file."""
    best: dict[str, tuple[int, str]] = {}
    for member in safe.members:
        m = _BAND_FILE.search(member)
        if not m:
            continue
        name = canonical_band(m.group(2))
        if name is None:
            continue
        res = int(m.group(1) or m.group(3) or 0)
        if name not in best or res < best[name][0]:
            best[name] = (res, member)
    return {name: member for name, (_, member) in best.items()}


def _metadata(fields: dict, files: dict[str, str]) -> dict[str, str]:
    tile = next((m.group(1) for f in files.values() if (m := _TILE.search("_" + f.rsplit("/", 1)[-1]))), None)
    pairs = {
        "tile_id": tile,
        "processing_baseline": _first(fields, "PROCESSING_BASELINE"),
        "cloud_cover": _first(fields, "Cloud_Coverage_Assessment", "CLOUDY_PIXEL_PERCENTAGE"),
        "spacecraft": _first(fields, "SPACECRAFT_NAME"),
        "product_uri": _first(fields, "PRODUCT_URI"),
    }
    return {k: v for k, v in pairs.items() if v}


def _members(safe: _Safe, pattern: re.Pattern) -> list[str]:
    """Members matching ``pattern``, the finest resolution (group 1, if any) first."""
    hits = [(int(m.group(1)) if m.groups() else 0, n) for n in safe.members if (m := pattern.search(n))]
    return [n for _, n in sorted(hits)]


def _cloud_mask(safe: _Safe, scene: str) -> CloudMask | None:
    """The product's own cloud mask on the grid of the stacked VRT ``scene`` (None when it has none)."""
    if scl := _members(safe, _SCL_FILE):
        path = safe.prefix + scl[0]
        return CloudMask(mask_vrt([BandFile("SCL", path)], scene, safe.origin), "scl", path,
                         masked_values=SCL_MASKED)
    if classi := _members(safe, _CLASSI_FILE):
        path = safe.prefix + classi[0]
        sources = [BandFile("MSK_CLASSI opaque clouds", path, 1), BandFile("MSK_CLASSI cirrus", path, 2)]
        return CloudMask(mask_vrt(sources, scene, safe.origin, bits=(0, 1)), "msk_classi", path,
                         masked_bits=(0, 1))
    if gml := _members(safe, _CLOUDS_GML):
        path = safe.prefix + gml[0]
        epsg, _ = gml_polygons(path)  # parsed now: a damaged mask is an error here, not in a task
        with rasterio.open(scene) as src:
            if epsg is not None and CRS.from_epsg(epsg) != src.crs:
                raise GridMismatchError(f"{safe.origin}: the cloud mask {gml[0]} is in EPSG:{epsg}, not in the "
                                        "bands' CRS; the product is inconsistent: download it again")
        return CloudMask(mask_vrt([], scene, safe.origin, tags={GML_KEY: path}), "msk_clouds", path,
                         masked_bits=(0, 1))
    return None


def read_safe(path: str | os.PathLike, bands: Sequence[str] | None = None) -> SceneSource:
    """A Sentinel-2 SAFE folder or zip as a :class:`SceneSource` (see the module docstring)."""
    safe = _locate(Path(path))
    fields = _fields(safe.mtd, safe.origin)
    files = _band_files(safe)
    chosen = select_bands(list(files), bands, safe.origin, f"this {safe.level} product")
    if not chosen:
        raise NotAProductError(f"{safe.origin}: no band files (GRANULE/*/IMG_DATA/*_B??.jp2) in this SAFE; "
                               "the download is incomplete")
    quant, offsets = _radiometry(fields, safe.level, safe.origin)
    band_files = [BandFile(name, safe.prefix + files[name], 1, 1.0 / quant,
                           offsets.get(BAND_ID[name], 0.0) / quant, 0.0) for name in chosen]
    if bands is None:  # a full product must have every band but the ones L2A drops (B10)
        expected = [b.name for b in SENTINEL2_BANDS if not (safe.level == "L2A" and b.name == "B10")]
        select_bands(list(files), expected, safe.origin, f"this {safe.level} product")
    acquired = _first(fields, "PRODUCT_START_TIME", "DATATAKE_SENSING_START")
    quantity = "toa_reflectance" if safe.level == "L1C" else "surface_reflectance"
    metadata = _metadata(fields, files)
    metadata["quantification_value"] = f"{quant:g}"
    tags = dataset_tags("sentinel-2", safe.level, quantity, acquired, metadata)
    xml = stack_vrt(band_files, tags, safe.origin)
    return SceneSource(xml, safe.origin, tuple(chosen), "sentinel-2", safe.level, quantity, acquired, metadata,
                       _cloud_mask(safe, xml))
