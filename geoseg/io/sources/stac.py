"""A STAC Item (local JSON) with one raster asset per band, read as one stacked VRT.

Band of an asset: its ``eo:bands`` / STAC 1.1 ``bands`` name or common name, else its key (Earth Search
``blue``, ``rededge1``, ``nir``, ``swir16``...; Planetary Computer ``B02``...), all through the one alias
table.  Scale/offset/nodata from ``raster:bands`` (STAC 1.1: the band's ``scale``/``offset``/``nodata``).
hrefs: relative to the JSON, absolute, ``file://``; http(s) through GDAL's ``/vsicurl/``.

Cloud mask: the Scene Classification asset (Earth Search key ``scl``, Planetary Computer ``SCL``),
classes as in an L2A SAFE (geoseg.io.clouds), resampled nearest onto the bands' grid.  An SCL asset
that was not downloaded (its local href is missing, or it is remote while every band is local) gives
``cloud_mask`` None rather than an error or a network read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from geoseg.errors import MissingBandError, NotAProductError
from geoseg.io.clouds import SCL_MASKED, CloudMask
from geoseg.io.sources.bands import canonical_band
from geoseg.io.sources.scene import SceneSource, dataset_tags, select_bands
from geoseg.io.sources.vrt import BandFile, mask_vrt, stack_vrt

_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-geotiff")


def _band_info(asset: dict) -> dict:
    for key in ("bands", "eo:bands"):
        value = asset.get(key)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            return value[0]
    return {}


def _band_name(key: str, asset: dict) -> str | None:
    info = _band_info(asset)
    for candidate in (info.get("name"), info.get("eo:common_name"), info.get("common_name"), key):
        if isinstance(candidate, str) and (canon := canonical_band(candidate)):
            return canon
    return None


def _is_raster(asset: dict) -> bool:
    media = str(asset.get("type", "")).lower()
    roles = asset.get("roles") or []
    if any(media.startswith(t) for t in _RASTER_TYPES):
        return "overview" not in roles and "thumbnail" not in roles
    return not media and "data" in roles


def _resolve(href: str, base: Path, origin: str, band: str) -> str:
    url = urlparse(href)
    if url.scheme in ("http", "https"):
        return "/vsicurl/" + href
    if url.scheme == "file":
        local = Path(unquote(url.path))
    elif url.scheme in ("", ) or len(url.scheme) == 1:  # a relative path, or a Windows drive letter
        local = Path(href)
    else:
        return href  # s3://... and others: GDAL's own virtual file systems decide
    if not local.is_absolute():
        local = base / local
    if not local.is_file():
        raise MissingBandError(f"{origin}: the asset of band {band} ({href}) does not exist at {local}; "
                               "download the assets next to the Item or fix its hrefs")
    return str(local.resolve())


def _radiometry(asset: dict) -> tuple[float, float, float | None]:
    rb = asset.get("raster:bands")
    info = rb[0] if isinstance(rb, list) and rb and isinstance(rb[0], dict) else _band_info(asset)
    nodata = info.get("nodata", asset.get("nodata"))
    return (float(info.get("scale", 1.0)), float(info.get("offset", 0.0)),
            None if nodata is None or isinstance(nodata, str) else float(nodata))


def _load(p: Path) -> dict:
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAProductError(f"{p}: not a readable STAC Item JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != "Feature" or not isinstance(doc.get("assets"), dict):
        raise NotAProductError(f"{p}: not a STAC Item (a 'Feature' with 'assets'); pass one Item JSON")
    return doc


def _sensor_level(props: dict, collection: str) -> tuple[str | None, str | None, str | None]:
    platform = str(props.get("platform", "")).lower()
    text = f"{collection} {props.get('processing:level', '')} {props.get('s2:product_type', '')}".lower()
    sensor = "sentinel-2" if "sentinel-2" in platform or "sentinel-2" in text else \
        next((s for s in ("landsat-8", "landsat-9") if s in platform), None)
    level = "L2A" if "l2a" in text else "L1C" if "l1c" in text else \
        "L2" if sensor and sensor.startswith("landsat") and "l2" in text else None
    quantity = {"L1C": "toa_reflectance", "L2A": "surface_reflectance", "L2": "surface_reflectance"}.get(level or "")
    return sensor, level, quantity


def _cloud_mask(doc: dict, base: Path, origin: str, scene: str, bands_local: bool) -> CloudMask | None:
    """The Item's SCL asset on the grid of the stacked VRT ``scene``, or None (see the module docstring)."""
    hit = next((a for k, a in doc["assets"].items()
                if k.lower() == "scl" and isinstance(a, dict) and isinstance(a.get("href"), str)), None)
    if hit is None:
        return None
    try:
        path = _resolve(hit["href"], base, origin, "SCL")
    except MissingBandError:
        return None
    if bands_local and not os.path.isfile(path):
        return None
    return CloudMask(mask_vrt([BandFile("SCL", path)], scene, origin), "scl", path, masked_values=SCL_MASKED)


def read_stac_item(path: str | os.PathLike, bands: Sequence[str] | None = None) -> SceneSource:
    """A local STAC Item JSON as a :class:`SceneSource` (see the module docstring)."""
    p = Path(path)
    origin = str(p)
    doc = _load(p)
    assets: dict[str, tuple[str, dict]] = {}
    for key, asset in doc["assets"].items():
        if isinstance(asset, dict) and _is_raster(asset) and (name := _band_name(key, asset)):
            assets.setdefault(name, (key, asset))
    if not assets:
        raise NotAProductError(f"{origin}: no asset of this STAC Item is a known spectral band (keys: "
                               f"{', '.join(doc['assets']) or 'none'}); geoseg needs one GeoTIFF/COG per band")
    chosen = select_bands(list(assets), bands, origin, "this STAC Item")
    band_files = []
    for name in chosen:
        key, asset = assets[name]
        if not isinstance(asset.get("href"), str):
            raise MissingBandError(f"{origin}: asset {key!r} (band {name}) has no href")
        scale, offset, nodata = _radiometry(asset)
        band_files.append(BandFile(name, _resolve(asset["href"], p.parent, origin, name), 1, scale, offset, nodata))
    props = doc.get("properties") or {}
    sensor, level, quantity = _sensor_level(props, str(doc.get("collection", "")))
    acquired = props.get("datetime") or props.get("start_datetime")
    meta = {"item_id": doc.get("id"), "collection": doc.get("collection"),
            "tile_id": props.get("s2:mgrs_tile") or props.get("grid:code") or props.get("mgrs:grid_square"),
            "processing_baseline": props.get("s2:processing_baseline"), "cloud_cover": props.get("eo:cloud_cover")}
    metadata = {k: str(v) for k, v in meta.items() if v is not None}
    xml = stack_vrt(band_files, dataset_tags(sensor, level, quantity, acquired, metadata), origin)
    mask = _cloud_mask(doc, p.parent, origin, xml, all(os.path.isfile(bf.path) for bf in band_files))
    return SceneSource(xml, origin, tuple(chosen), sensor, level, quantity, acquired, metadata, mask)
