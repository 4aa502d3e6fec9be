"""STAC Items (``item.json``) describing geoseg run folders: ``predict``, ``change`` and monitoring AOIs.

STAC 1.1.0 with the projection (v2.0.0), raster (v1.1.0), file (v2.1.0) and classification (v2.0.0)
extensions, built from the run's record and the files themselves:

* item ``bbox``/``geometry`` in WGS84 (the raster footprint, edges densified before reprojection);
* ``proj:code`` (``EPSG:<n>`` when the CRS has one, else ``proj:wkt2``), ``proj:shape``, ``proj:transform``
  and ``proj:bbox`` on the item (every raster of a folder shares one grid);
* per raster asset ``raster:bands`` (nodata, data_type, scale/offset, sampling ``area``), and on class
  rasters ``classification:classes`` (value, name, title, color_hint, plus the nodata value);
* every asset gets ``file:size`` and ``file:checksum`` (multihash SHA2-256, hex ``1220`` + digest).

The kinds of folder:

* :func:`stac_item` / :func:`write_stac_item`: a ``geoseg predict`` folder (``run.json``); ``datetime`` is
  the scene's acquisition time (``--acquired`` or the scene's tags), else the run's ``created`` time;
* :func:`change_item` / :func:`write_change_item`: a ``geoseg change`` folder (``change.json``);
  ``start_datetime``/``end_datetime`` are the inputs' acquisition times when both carry one (an
  ``ACQUISITION_DATETIME``-like tag: geoseg predict writes it), else ``datetime`` is the change run's time;
* :func:`monitor_item`: one monitoring AOI folder (``alerts.gpkg``, ``alerts_gfw.tif``); ``start_datetime`` /
  ``end_datetime`` are the first and last acquisition dates applied (the ``aoi_summary`` layer);
  :func:`monitor_catalog`: a STAC Catalog linking the AOI items.

Write an item *after* every file it lists (checksums).  No torch, no dask.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import rasterio
import rasterio.warp
from rasterio.crs import CRS

from geoseg._util.atomic import atomic_write_text
from geoseg.delivery.lineage import lineage
from geoseg.errors import InputError, InputFileError

__all__ = ["write_stac_item", "stac_item", "read_record", "change_item", "write_change_item", "monitor_item",
           "monitor_catalog", "multihash_sha256", "classification_classes", "dumps", "STAC_VERSION", "EXTENSIONS",
           "ITEM_NAME"]

STAC_VERSION = "1.1.0"
EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
}
#: declared by the Items that carry ``processing:`` fields (a prediction's: how its input was read)
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"
ITEM_NAME = "item.json"
CATALOG_NAME = "catalog.json"

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

#: a class: (value, name, colour "#RRGGBB" or None, description)
Klass = tuple[int, str, str | None, str]
#: a nodata class: (value, name, title, description)
NodataClass = tuple[int, str, str, str]


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


def classification_classes(classes: Iterable[Klass], nodata: NodataClass | None = None) -> list[dict[str, Any]]:
    """``classification:classes`` from ``(value, name, colour, description)``, sorted by value; ``nodata``
    (``(value, name, title, description)``) is appended with ``nodata: true``.  ``name`` is sanitised to
    classification v2's ``^[0-9A-Za-z-_]+$``; the readable name is the ``title``."""
    out = []
    for value, name, colour, desc in sorted(classes, key=lambda c: c[0]):
        c: dict[str, Any] = {"value": int(value), "name": _class_name_token(name), "title": name,
                             "description": desc or name}
        if colour:
            c["color_hint"] = colour.lstrip("#").upper()
        out.append(c)
    if nodata is not None:
        value, name, title, desc = nodata
        out.append({"value": int(value), "name": _class_name_token(name), "title": title, "description": desc,
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


def _raster_asset(path: Path, classes: list[dict] | None, title: str | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(asset with ``raster:bands``, file fields and optional classes; the raster's grid)."""
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
    asset: dict[str, Any] = {"href": f"./{path.name}", "type": _MEDIA[".tif"], "roles": ["data"]}
    if title:
        asset["title"] = title
    asset["raster:bands"] = bands
    if classes is not None:
        asset["classification:classes"] = classes
    asset.update(_file_fields(path))
    return asset, grid


def _file_asset(path: Path, roles: Sequence[str], title: str, **extra: Any) -> dict[str, Any]:
    """A non-raster asset: href relative to the item, media type, roles, title, ``extra`` fields, file fields."""
    a: dict[str, Any] = {"href": f"./{path.name}", "type": _MEDIA.get(path.suffix, "application/octet-stream"),
                         "roles": list(roles), "title": title, **extra}
    a.update(_file_fields(path))
    return a


def _add_existing(assets: dict[str, dict[str, Any]], folder: Path,
                  extras: Iterable[tuple[str, str, Sequence[str], str, dict[str, Any]]]) -> None:
    """Add ``(key, file name, roles, title, extra fields)`` for each file that exists in ``folder``."""
    for key, name, roles, title, extra in extras:
        path = folder / name
        if path.is_file():
            assets[key] = _file_asset(path, roles, title, **extra)


def _grid_fields(grid: dict[str, Any]) -> tuple[dict[str, Any], list[float] | None, dict | None]:
    """(``proj:*`` properties, WGS84 bbox, WGS84 footprint geometry) of a raster grid."""
    crs: CRS | None = grid["crs"]
    t = grid["transform"]
    props: dict[str, Any] = {"proj:shape": [grid["height"], grid["width"]],
                             "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f]}
    if crs is None:
        props["proj:code"] = None
        return props, None, None
    epsg = crs.to_epsg()
    if epsg is not None:
        props["proj:code"] = f"EPSG:{epsg}"
    else:
        props["proj:code"] = None
        props["proj:wkt2"] = crs.to_wkt()
    props["proj:bbox"] = grid["bounds"]
    bbox, geometry = _footprint(crs, t, grid["width"], grid["height"])
    return props, bbox, geometry


def _item(item_id: str, grid: dict[str, Any], props: dict[str, Any], assets: dict[str, dict[str, Any]],
          links: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """A STAC Item on ``grid`` (footprint, projection fields) with ``props`` and ``assets``."""
    proj, bbox, geometry = _grid_fields(grid)
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXTENSIONS.values()) + ([PROCESSING_EXTENSION] if any(
            k.startswith("processing:") for k in props) else []),
        "id": item_id,
        "geometry": geometry,
        **({"bbox": bbox} if bbox is not None else {}),
        "properties": {**props, **proj},
        "links": list(links),  # a catalogue adds self/parent/collection links when it ingests the item
        "assets": assets,
    }


def read_record(path: Path, how: str, fix: str | None = None) -> dict[str, Any]:
    """A geoseg record (``run.json``, ``change.json``: a JSON object), or a one-line error: missing
    (:class:`InputFileError`, ``how`` tells how to make one), not JSON or not an object
    (:class:`InputError`, ending in ``fix``, by default ``how``)."""
    fix = how if fix is None else fix
    if not path.is_file():
        raise InputFileError(f"{path} does not exist; {how}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(record, dict):
        raise InputError(f"{path} is not a geoseg run record (not a JSON object); {fix}")
    return record


def dumps(doc: dict[str, Any]) -> str:
    """The text of a STAC document as geoseg writes it (2-space indented JSON, final newline)."""
    return json.dumps(doc, indent=2) + "\n"


def _write(folder: str | os.PathLike, item: dict[str, Any], name: str) -> str:
    return atomic_write_text(Path(folder) / name, dumps(item))


# -- geoseg predict -------------------------------------------------------------------------------------


def _predict_classes(record: dict) -> list[dict[str, Any]]:
    return classification_classes([(c["value"], c["name"], c["color"], c["name"]) for c in record.get("classes", [])],
                                  (255, "nodata", "no valid input", "no valid input"))


def stac_item(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The STAC Item of the ``geoseg predict`` run in ``out_dir`` (needs ``run.json`` and the outputs it lists)."""
    out = Path(out_dir)
    record = read_record(out / "run.json", f"run geoseg predict into {out} first")
    outputs: dict[str, str] = record.get("outputs") or {"landcover": "landcover.tif"}
    classes = _predict_classes(record)

    assets: dict[str, dict[str, Any]] = {}
    grid = None
    titles = {"landcover": "land-cover classes", "probabilities": "class probabilities (percent)",
              "confidence": "confidence: maximum class probability (percent)"}
    for key, name in outputs.items():
        path = out / name
        if not path.is_file():
            raise InputError(f"{path} (listed in run.json) does not exist; re-run geoseg predict")
        assets[key], g = _raster_asset(path, classes if key == "landcover" else None, titles.get(key, key))
        grid = grid or g
    if grid is None:
        raise InputError(f"{out / 'run.json'} lists no raster outputs; re-run geoseg predict")

    stem = Path(outputs.get("landcover", "landcover.tif")).stem
    extras = [(f"{stem}-vector", f"{stem}{ext}", ["data"], "land-cover polygons",
               {"classification:classes": classes[:-1]}) for ext in (".gpkg", ".parquet", ".fgb", ".geojson")]
    extras.append(("quicklook", "quicklook.png", ["overview", "visual"], "quicklook with legend", {}))
    for key, name in outputs.items():  # per-raster sidecars
        extras.append((f"{key}-style", f"{Path(name).stem}.qml", ["metadata", "style"], f"QGIS style of {name}", {}))
        extras.append((f"{key}-aux", f"{name}.aux.xml", ["metadata"],
                       f"GDAL auxiliary metadata of {name} (raster attribute table, category names)", {}))
    extras.append(("report", "report.html", ["overview", "metadata"], "run report (self-contained HTML)", {}))
    extras.append(("run", "run.json", ["metadata"], "geoseg run record", {}))
    _add_existing(assets, out, extras)

    model = record.get("model", {})
    props = {
        "datetime": record.get("acquired") or record["created"],  # the scene's time, else processing time
        "created": record["created"],
        "title": f"geoseg land cover, run {record.get('run_id', '')}".strip(),
        "description": f"land-cover classes predicted by model {model.get('id', '?')} "
                       f"(trained: {model.get('trained')}) with geoseg {record.get('geoseg_version', '?')}",
        "processing:lineage": lineage(record),
        "processing:software": {"geoseg": str(record.get("geoseg_version", "unknown"))},
    }
    links: list[dict[str, str]] = []
    if isinstance(record.get("mosaic"), dict):
        props.update(_mosaic_props(record))
        links = _derived_from(out, record["mosaic"])
    return _item(f"geoseg-{record.get('run_id', out.name)}", grid, props, assets, links)


def _mosaic_props(record: dict[str, Any]) -> dict[str, Any]:
    """A ``geoseg mosaic`` folder: the inputs' time span (else the processing time), title and rule."""
    m = record["mosaic"]
    inputs = m.get("inputs") or []
    times = [i.get("acquired") for i in inputs]
    when: dict[str, Any] = ({"datetime": None, "start_datetime": min(times), "end_datetime": max(times)}
                            if times and all(times) else {"datetime": record["created"]})
    return {**when, "title": f"geoseg land-cover mosaic of {len(inputs)} scenes, run {record.get('run_id', '')}",
            "description": f"land-cover classes of {len(inputs)} scenes predicted by model "
                           f"{(record.get('model') or {}).get('id', '?')}, mosaicked on one grid (overlap rule "
                           f"{m.get('rule')}) with geoseg {record.get('geoseg_version', '?')}"
                           + ("" if times and all(times) else "; datetime is the processing time (an input "
                                                              "carries no acquisition time)"),
            "geoseg:rule": m.get("rule")}


def _derived_from(out: Path, mosaic: dict[str, Any]) -> list[dict[str, str]]:
    """``derived_from`` links to the inputs' STAC Items (relative hrefs where they share a drive)."""
    links = []
    for i in mosaic.get("inputs") or []:
        item = i.get("item")
        if not item:
            continue
        try:
            href = os.path.relpath(item, out.resolve())
        except ValueError:  # another drive (Windows)
            href = item
        links.append({"rel": "derived_from", "href": Path(href).as_posix(), "type": "application/geo+json",
                      "title": f"input scene {i.get('id', '')}".strip()})
    return links


def write_stac_item(out_dir: str | os.PathLike, name: str = ITEM_NAME) -> str:
    """Write ``out_dir/item.json`` (atomically) for the ``geoseg predict`` run in ``out_dir``; returns its path."""
    return _write(out_dir, stac_item(out_dir), name)


# -- geoseg change --------------------------------------------------------------------------------------

_CHANGE_DESCRIPTIONS = {
    "no_change": "observed in both dates, forest both times or non-forest both times",
    "forest_loss": "forest before, not forest after",
    "forest_gain": "not forest before, forest after",
}


def _change_classes(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The change raster's classes from ``change.json``'s ``codes`` (value -> name) and the colours of
    :data:`geoseg.change.CHANGE_CLASSES`."""
    from geoseg.io.codes import CHANGE_CLASSES, UNOBSERVED

    colours = {n: "#{:02X}{:02X}{:02X}".format(*rgba[:3]) for n, rgba in CHANGE_CLASSES.values()}
    codes = {int(v): str(n) for v, n in (record.get("codes") or {}).items()}
    nodata_name = codes.pop(UNOBSERVED, "unobserved")
    return classification_classes(
        [(v, n, colours.get(n), _CHANGE_DESCRIPTIONS.get(n, n)) for v, n in codes.items()],
        (UNOBSERVED, nodata_name, nodata_name, "unobserved: nodata or masked in either date, or outside AFTER's "
                                               "footprint"))


def change_item(change_dir: str | os.PathLike) -> dict[str, Any]:
    """The STAC Item of the ``geoseg change`` run in ``change_dir`` (needs ``change.json`` and ``change.tif``)."""
    out = Path(change_dir)
    record = read_record(out / "change.json", f"run geoseg change into {out} first")
    outputs = record.get("outputs") or {"change": "change.tif", "loss": "loss.gpkg"}
    raster = out / outputs.get("change", "change.tif")
    if not raster.is_file():
        raise InputError(f"{raster} (listed in change.json) does not exist; re-run geoseg change")
    assets: dict[str, dict[str, Any]] = {}
    assets["change"], grid = _raster_asset(raster, _change_classes(record),
                                           "forest change: 0 no change, 1 loss, 2 gain, 255 unobserved")
    mmu = record.get("min_area_ha")
    _add_existing(assets, out, [
        ("loss", outputs.get("loss", "loss.gpkg"), ["data"],
         f"forest-loss polygons (layer loss), patches of at least {mmu} ha", {}),
        ("quicklook", "change_quicklook.png", ["overview", "thumbnail"], "before / after / change quicklook", {}),
        ("change-style", f"{raster.stem}.qml", ["metadata", "style"], f"QGIS style of {raster.name}", {}),
        ("report", "report.html", ["overview", "metadata"], "change report (self-contained HTML)", {}),
        ("record", "change.json", ["metadata"], "geoseg change record (inputs, pixel counts, areas)", {}),
    ])
    before, after = Path(record.get("before") or "before").name, Path(record.get("after") or "after").name
    t0, t1 = record.get("before_acquired"), record.get("after_acquired")
    when: dict[str, Any] = ({"datetime": None, "start_datetime": min(t0, t1), "end_datetime": max(t0, t1)}
                            if t0 and t1 else {"datetime": record["created"]})
    props = {
        **when,
        "created": record["created"],
        "title": f"geoseg forest change {before} -> {after}",
        "description": f"forest loss and gain from {record.get('before')} to {record.get('after')} "
                       f"({record.get('mode')} mode) with geoseg {record.get('geoseg_version', '?')}"
                       + ("" if t0 and t1 else "; datetime is the processing time (the inputs carry no "
                                              "acquisition time tag)"),
        "geoseg:before": record.get("before"),
        "geoseg:after": record.get("after"),
    }
    return _item(f"geoseg-change-{record.get('run_id', out.name)}", grid, props, assets)


def write_change_item(change_dir: str | os.PathLike, name: str = ITEM_NAME) -> str:
    """Write ``change_dir/item.json`` (atomically) for the ``geoseg change`` run there; returns its path."""
    return _write(change_dir, change_item(change_dir), name)


# -- geoseg monitor -------------------------------------------------------------------------------------

GFW_DESCRIPTION = ("Global Forest Watch date-confidence encoding (uint16): value = confidence * 10000 + days "
                   "since 2014-12-31 of the first loss observation; confidence 2 = low (2xxxx), 3 = high (3xxxx); "
                   "0 = no alert (nodata)")


def _applied_dates(gpkg: Path) -> list[str]:
    """Acquisition dates (ISO) of the scenes applied to an AOI, from ``alerts.gpkg``'s ``aoi_summary`` layer."""
    import pyogrio

    df = pyogrio.read_dataframe(gpkg, layer="aoi_summary", read_geometry=False, columns=["date"])
    return sorted(str(d) for d in df["date"])


def monitor_item(aoi_folder: str | os.PathLike, *, aoi_id: str | None = None, run_id: str | None = None,
                 updated: str | None = None, catalog: str | None = f"../{CATALOG_NAME}") -> dict[str, Any]:
    """The STAC Item of one monitoring AOI folder (``OUT/<aoi_id>/``: ``alerts_gfw.tif``, ``alerts.gpkg``, ...).

    ``start_datetime``/``end_datetime``: the first and last acquisition dates applied; ``updated``: the
    time of this rewrite.  ``catalog``: relative href of the run-level catalog (root and parent links),
    ``None`` for none.  The GFW raster carries no ``classification:classes``: its values encode a date and a
    confidence (tens of thousands of values, not bit fields), so the encoding is given as text.
    """
    folder = Path(aoi_folder)
    aoi = aoi_id or folder.name
    gfw, gpkg = folder / "alerts_gfw.tif", folder / "alerts.gpkg"
    for p in (gfw, gpkg):
        if not p.is_file():
            raise InputFileError(f"{p} does not exist; run geoseg monitor run first")
    assets: dict[str, dict[str, Any]] = {}
    assets["alerts_gfw"], grid = _raster_asset(gfw, None, "alerts: GFW date-confidence raster")
    assets["alerts_gfw"]["description"] = GFW_DESCRIPTION
    extras: list[tuple[str, str, Sequence[str], str, dict[str, Any]]] = [
        ("alerts", "alerts.gpkg", ["data"], "alert polygons (layer alerts) and per-scene summary (layer aoi_summary)",
         {"description": "field confidence: high (confirmed), low (unconfirmed), rejected; status: confirmed, "
                         "unconfirmed, rejected, superseded"}),
        ("alerts_gfw-style", "alerts_gfw.qml", ["metadata", "style"], "QGIS style of alerts_gfw.tif", {}),
        ("report", "report.html", ["overview", "metadata"], "monitoring report (self-contained HTML)", {}),
    ]
    extras += [(p.stem.replace("_", "-"), p.name, ["data"], "alerts new or changed by a run (GeoJSON, WGS84)", {})
               for p in sorted(folder.glob("changes_since_*.geojson"))]
    _add_existing(assets, folder, extras)
    dates = _applied_dates(gpkg)
    if not dates:
        raise InputError(f"{gpkg} lists no applied scene (layer aoi_summary); run geoseg monitor run first")
    props = {
        "datetime": None,
        "start_datetime": f"{dates[0]}T00:00:00Z",
        "end_datetime": f"{dates[-1]}T00:00:00Z",
        **({"updated": updated} if updated else {}),
        "title": f"geoseg forest-loss alerts, AOI {aoi}",
        "description": f"forest-loss alerts of AOI {aoi} from {len(dates)} scene(s) acquired {dates[0]} to "
                       f"{dates[-1]}" + (f"; last rewritten by run {run_id}" if run_id else ""),
        "geoseg:aoi_id": aoi,
    }
    links = [{"rel": "root", "href": catalog, "type": "application/json"},
             {"rel": "parent", "href": catalog, "type": "application/json"}] if catalog else []
    return _item(f"geoseg-monitor-{aoi}", grid, props, assets, links)


def monitor_catalog(out_dir: str | os.PathLike, aoi_ids: Sequence[str]) -> dict[str, Any]:
    """A STAC Catalog (``OUT/catalog.json``) linking ``OUT/<aoi_id>/item.json`` of every AOI that has one."""
    out = Path(out_dir)
    links = [{"rel": "root", "href": f"./{CATALOG_NAME}", "type": "application/json"}]
    links += [{"rel": "item", "href": f"./{a}/{ITEM_NAME}", "type": "application/geo+json", "title": f"AOI {a}"}
              for a in aoi_ids if (out / a / ITEM_NAME).is_file()]
    return {"type": "Catalog", "stac_version": STAC_VERSION, "id": "geoseg-monitor",
            "title": "geoseg forest-loss monitoring",
            "description": "forest-loss alerts per area of interest, one STAC Item each", "links": links}
