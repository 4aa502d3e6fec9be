"""The sidecars of a land-cover run folder, written once for ``geoseg predict`` and ``geoseg mosaic``: the QGIS
styles and raster attribute table of the class map, the percent styles of probabilities/confidence, the
quicklook, the report and, last (it records the checksums of every other file), the STAC Item."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from geoseg.io.codes import ClassInfo

__all__ = ["SIDECARS", "sidecar_names", "write_sidecars"]

#: Files written beside the rasters for GIS users (see docs/delivery.md).
SIDECARS = ["landcover.qml", "landcover.tif.aux.xml", "quicklook.png", "report.html", "item.json"]


def sidecar_names(rasters: Sequence[str]) -> list[str]:
    """The sidecar names of a folder holding ``rasters`` (``landcover.tif``, ``probabilities.tif``, ...)."""
    return SIDECARS + [f"{n[:-4]}.qml" for n in rasters if n in ("probabilities.tif", "confidence.tif")]


def write_sidecars(out: str | os.PathLike, landcover: str, classes: Sequence[ClassInfo], *,
                   probabilities: str | None = None, confidence: str | None = None,
                   class_pixels: Mapping[str, int] | None = None, title: str | None = None,
                   sections: Sequence[tuple[str, str]] = ()) -> str:
    """Styles, class table, quicklook, report (``title``, extra ``sections``) and STAC Item for the finished
    products of the run folder ``out`` (its ``run.json`` is written); returns the item's path."""
    from geoseg.delivery.quicklook import write_quicklook
    from geoseg.delivery.rat import write_rat
    from geoseg.delivery.report import write_report
    from geoseg.delivery.stac import write_stac_item
    from geoseg.delivery.style import write_percent_qml, write_qml

    folder = Path(out)
    write_qml(landcover, classes)
    write_rat(landcover, classes)
    if probabilities:
        write_percent_qml(probabilities, label="probability")
    if confidence:
        write_percent_qml(confidence, label="confidence")
    write_quicklook(landcover, folder / "quicklook.png", classes, class_pixels=class_pixels)
    write_report(folder, pending=["item.json"], title=title, sections=sections)
    return write_stac_item(folder)  # last: it records checksums of every other file
