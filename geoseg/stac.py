"""A STAC Item (``OUT/item.json``) describing one ``geoseg predict`` run, built from ``run.json`` and the files.

STAC 1.1.0 with the projection (v2.0.0), raster (v1.1.0), file (v2.1.0) and classification (v2.0.0)
extensions:

* item ``bbox``/``geometry`` in WGS84 (the raster footprint, edges densified before reprojection);
  ``datetime`` is the run's ``created`` time from ``run.json`` (the processing time: geoseg does not know the
  scene's acquisition time);
* ``proj:code`` (``EPSG:<n>`` when the CRS has one, else ``proj:wkt2``), ``proj:shape``, ``proj:transform``
  and ``proj:bbox`` on the item (every raster shares the scene grid);
* per raster asset ``raster:bands`` (nodata, data_type, scale/offset, sampling ``area``), and on class
  rasters ``classification:classes`` (value, name, title, color_hint, plus the nodata value);
* every asset (rasters, ``run.json``, and sidecars present: vectors, ``quicklook.png``, ``.qml``) gets
  ``file:size`` and ``file:checksum`` (multihash SHA2-256, hex ``1220`` + digest).

Write the item *after* every file it lists (checksums).  No torch, no dask.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import rasterio
import rasterio.warp
from rasterio.crs import CRS

from .errors import InputError
from .style import atomic_write_text

__all__ = ["write_stac_item", "stac_item", "multihash_sha256", "STAC_VERSION", "EXTENSIONS"]

STAC_VERSION = "1.1.0"
EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
}
ITEM_NAME = "item.json"

_MEDIA = {
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".gpkg": "application/geopackage+sqlite3",
    ".parquet": "application/vnd.apache.parquet",
    ".fgb": "application/vnd.flatgeobuf",
    ".geojson": "application/geo+json",
    ".png": "image/png",
    ".qml": "application/xml",
    ".json": "application/json",
    ".xml": "application/xml",
    ".csv": "text/csv",
    ".html": "text/html",
}


def multihash_sha256(path: str | os.PathLike, chunk: int = 4 * 2**20) -> str:
    """Multihash of the file's SHA2-256 as hex: code 0x12, length 0x20, then the digest."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return "1220" + h.hexdigest()


def _file_fields(path: Path) -> dict[str, Any]:
    return {"file:size": path.stat().st_size, "file:checksum": multihash_sha256(path)}


def _class_name_token(name: str) -> str:
    """classification v2 ``name`` must match ``^[0-9A-Za-z-_]+$``; the readable name goes to ``title``."""
    token = re.sub(r"[^0-9A-Za-z_-]+", "_", name.strip()).strip("_")
    return token or "class"


def _classes(record: dict) -> list[dict[str, Any]]:
    out = []
    for c in sorted(record.get("classes", []), key=lambda c: c["value"]):
        out.append({"value": int(c["value"]), "name": _class_name_token(c["name"]), "title": c["name"],
                    "description": c["name"], "color_hint": c["color"].lstrip("#").upper()})
    out.append({"value": 255, "name": "nodata", "title": "no valid input", "description": "no valid input",
                "nodata": True})
    return out


def _footprint(crs: CRS, transform, width: int, height: int, n: int = 21):
    """WGS84 bbox and polygon of the raster extent, each edge densified with ``n`` points."""
    xs, ys = [], []
    corners = [(0, 0), (width, 0), (width, height), (0, height), (0, 0)]
    for (c0, r0), (c1, r1) in zip(corners[:-1], corners[1:]):
        for i in range(n):
            t = i / n
            x, y = transform @ (c0 + (c1 - c0) * t, r0 + (r1 - r0) * t)
            xs.append(x)
            ys.append(y)
    lon, lat = rasterio.warp.transform(crs, "EPSG:4326", xs, ys)
    import shapely.geometry
    from shapely.geometry.polygon import orient

    poly = orient(shapely.geometry.Polygon(list(zip(lon, lat))), sign=1.0)  # RFC 7946: exterior ring CCW
    ring = [[round(a, 7), round(b, 7)] for a, b in poly.exterior.coords]
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    return [round(v, 7) for v in bbox], {"type": "Polygon", "coordinates": [ring]}


def _raster_asset(path: Path, classes: list[dict] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    with rasterio.open(path) as src:
        bands = []
        for i in range(src.count):
            b: dict[str, Any] = {"data_type": src.dtypes[i], "sampling": "area"}
            if src.nodata is not None:
                b["nodata"] = int(src.nodata) if float(src.nodata).is_integer() else float(src.nodata)
            if src.scales[i] != 1.0 or src.offsets[i] != 0.0:
                b["scale"], b["offset"] = float(src.scales[i]), float(src.offsets[i])
            if src.units and src.units[i]:
                b["unit"] = src.units[i]
            if src.crs is not None and src.crs.is_projected:
                b["spatial_resolution"] = float(abs(src.transform.a))
            bands.append(b)
        grid = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height,
                "bounds": list(src.bounds), "descriptions": src.descriptions}
    asset: dict[str, Any] = {"href": f"./{path.name}", "type": _MEDIA[".tif"], "roles": ["data"],
                             "raster:bands": bands}
    if classes is not None:
        asset["classification:classes"] = classes
    return asset, grid


def stac_item(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The STAC Item of the run in ``out_dir`` (needs ``run.json`` and the outputs it lists)."""
    out = Path(out_dir)
    run_json = out / "run.json"
    if not run_json.is_file():
        raise InputError(f"{run_json} does not exist; run geoseg predict into {out} first")
    try:
        record = json.loads(run_json.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{run_json} is not valid JSON ({e}); re-run geoseg predict") from None
    outputs: dict[str, str] = record.get("outputs") or {"landcover": "landcover.tif"}
    classes = _classes(record)

    assets: dict[str, dict[str, Any]] = {}
    grid = None
    for key, name in outputs.items():
        path = out / name
        if not path.is_file():
            raise InputError(f"{path} (listed in run.json) does not exist; re-run geoseg predict")
        asset, g = _raster_asset(path, classes if key == "landcover" else None)
        asset["title"] = {"landcover": "land-cover classes", "probabilities": "class probabilities (percent)",
                          "confidence": "confidence: maximum class probability (percent)"}.get(key, key)
        asset.update(_file_fields(path))
        assets[key] = asset
        grid = grid or g
    if grid is None:
        raise InputError(f"{run_json} lists no raster outputs; re-run geoseg predict")

    # sidecars that exist beside the rasters
    stem = Path(outputs.get("landcover", "landcover.tif")).stem
    extras = [(f"{stem}-vector", f"{stem}{ext}", ["data"], "land-cover polygons")
              for ext in (".gpkg", ".parquet", ".fgb", ".geojson")]
    extras.append(("quicklook", "quicklook.png", ["overview", "visual"], "quicklook with legend"))
    for key, name in outputs.items():  # per-raster sidecars
        extras.append((f"{key}-style", f"{Path(name).stem}.qml", ["metadata", "style"], f"QGIS style of {name}"))
        extras.append((f"{key}-aux", f"{name}.aux.xml", ["metadata"],
                       f"GDAL auxiliary metadata of {name} (raster attribute table, category names)"))
    extras.append(("report", "report.html", ["overview", "metadata"], "run report (self-contained HTML)"))
    extras.append(("run", "run.json", ["metadata"], "geoseg run record"))
    for key, name, roles, title in extras:
        path = out / name
        if path.is_file():
            a: dict[str, Any] = {"href": f"./{name}", "type": _MEDIA.get(path.suffix, "application/octet-stream"),
                                 "roles": roles, "title": title}
            if key == f"{stem}-vector":
                a["classification:classes"] = classes[:-1]
            a.update(_file_fields(path))
            assets[key] = a

    crs: CRS | None = grid["crs"]
    t = grid["transform"]
    props: dict[str, Any] = {
        "datetime": record["created"],
        "created": record["created"],
        "title": f"geoseg land cover, run {record.get('run_id', '')}".strip(),
        "description": f"land-cover classes predicted by model {record.get('model', {}).get('id', '?')} "
                       f"(trained: {record.get('model', {}).get('trained')}) with geoseg "
                       f"{record.get('geoseg_version', '?')}",
        "proj:shape": [grid["height"], grid["width"]],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
    }
    bbox = geometry = None
    if crs is not None:
        epsg = crs.to_epsg()
        if epsg is not None:
            props["proj:code"] = f"EPSG:{epsg}"
        else:
            props["proj:code"] = None
            props["proj:wkt2"] = crs.to_wkt()
        props["proj:bbox"] = grid["bounds"]
        bbox, geometry = _footprint(crs, t, grid["width"], grid["height"])
    else:
        props["proj:code"] = None
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXTENSIONS.values()),
        "id": f"geoseg-{record.get('run_id', out.name)}",
        "geometry": geometry,
        **({"bbox": bbox} if bbox is not None else {}),
        "properties": props,
        "links": [],  # a catalogue adds self/parent/collection links when it ingests the item
        "assets": assets,
    }
    return item


def write_stac_item(out_dir: str | os.PathLike, name: str = ITEM_NAME) -> str:
    """Write ``out_dir/item.json`` (atomically) for the run in ``out_dir``; returns its path."""
    item = stac_item(out_dir)
    return atomic_write_text(Path(out_dir) / name, json.dumps(item, indent=2) + "\n")
