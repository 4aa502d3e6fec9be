"""Class names as a GDAL raster attribute table (RAT) and category names, in a PAM ``.aux.xml`` sidecar.

rasterio cannot write RATs, so :func:`write_rat` writes ``<raster>.aux.xml`` (GDAL's *Persistent Auxiliary
Metadata*), which GDAL merges into the dataset when it opens the raster: ``gdalinfo`` then lists the category
names and the RAT, and QGIS (>= 3.30) offers the RAT's class names and colours.  Band 1 gets

* ``<CategoryNames>``: entry *i* is the name of pixel value *i* (empty for values without a class);
* ``<GDALRasterAttributeTable tableType="thematic">`` with columns ``Value`` (usage MinMax), ``Class_Name``
  (Name), ``Red``/``Green``/``Blue``/``Alpha`` (colour usages), one row per class.

An existing ``.aux.xml`` (statistics, say) is kept: only band 1's category names and RAT are replaced.
The write is atomic (temporary file + ``os.replace``).  No torch, no dask.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from geoseg._util.atomic import atomic_write_text
from geoseg.errors import InputError
from geoseg.io.codes import ClassInfo

__all__ = ["write_rat", "rat_xml", "aux_path", "RAT_COLUMNS"]

# GDALRATFieldType: 0 integer, 1 real, 2 string.  GDALRATFieldUsage: 0 generic, 1 pixel count, 2 name,
# 3 min, 4 max, 5 min-max, 6 red, 7 green, 8 blue, 9 alpha.
RAT_COLUMNS: tuple[tuple[str, int, int], ...] = (
    ("Value", 0, 5),
    ("Class_Name", 2, 2),
    ("Red", 0, 6),
    ("Green", 0, 7),
    ("Blue", 0, 8),
    ("Alpha", 0, 9),
)


def aux_path(raster_path: str | os.PathLike) -> str:
    return os.fspath(raster_path) + ".aux.xml"


def _band_elements(classes: Sequence[ClassInfo]) -> tuple[ET.Element, ET.Element]:
    cls = sorted(classes, key=lambda c: c.value)
    if not cls:
        raise InputError("no classes given for the attribute table; pass the model card's classes")
    names = {c.value: c.name for c in cls}
    cats = ET.Element("CategoryNames")
    for v in range(max(names) + 1):
        ET.SubElement(cats, "Category").text = names.get(v, "")
    rat = ET.Element("GDALRasterAttributeTable", tableType="thematic")
    for i, (name, ftype, usage) in enumerate(RAT_COLUMNS):
        f = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(f, "Name").text = name
        ET.SubElement(f, "Type").text = str(ftype)
        ET.SubElement(f, "Usage").text = str(usage)
    for i, c in enumerate(cls):
        row = ET.SubElement(rat, "Row", index=str(i))
        for val in (c.value, c.name, *c.rgb, 255):
            ET.SubElement(row, "F").text = str(val)
    return cats, rat


def rat_xml(classes: Sequence[ClassInfo], existing: str | None = None, band: int = 1) -> str:
    """PAM XML with ``band``'s category names and RAT set; other content of ``existing`` is kept."""
    root = ET.fromstring(existing) if existing else ET.Element("PAMDataset")
    if root.tag != "PAMDataset":
        raise InputError("the existing .aux.xml is not a GDAL PAMDataset; remove it and retry")
    pam_band = next((b for b in root.findall("PAMRasterBand") if b.get("band") == str(band)), None)
    if pam_band is None:
        pam_band = ET.SubElement(root, "PAMRasterBand", band=str(band))
    for tag in ("CategoryNames", "GDALRasterAttributeTable"):
        for el in pam_band.findall(tag):
            pam_band.remove(el)
    cats, rat = _band_elements(classes)
    pam_band.insert(0, rat)
    pam_band.insert(0, cats)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_rat(raster_path: str | os.PathLike, classes: Sequence[ClassInfo], band: int = 1) -> str:
    """Write (or update) ``<raster>.aux.xml`` with the class RAT and category names; returns its path."""
    if not Path(raster_path).is_file():
        raise InputError(f"{raster_path} does not exist; write the raster before its attribute table")
    aux = Path(aux_path(raster_path))
    existing = None
    if aux.is_file():
        existing = aux.read_text(encoding="utf-8")
        try:
            ET.fromstring(existing)
        except ET.ParseError:
            existing = None  # a broken sidecar would hide the raster's metadata from GDAL: replace it
    return atomic_write_text(aux, rat_xml(classes, existing, band))
