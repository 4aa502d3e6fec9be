"""A STAC Item (local JSON) with one raster asset per band, read as one stacked VRT.

Band of an asset: its ``eo:bands`` / STAC 1.1 ``bands`` name or common name, else its key (Earth Search
``blue``, ``rededge1``, ``nir``, ``swir16``...; Planetary Computer ``B02``...), all through the one alias
table.  Scale/offset/nodata from ``raster:bands`` (STAC 1.1: the band's ``scale``/``offset``/``nodata``).
The Item is read with pystac (``pystac.Item.from_dict`` of the JSON pystac's StacIO reads; its errors become
one-line NotAProductErrors); hrefs made absolute by pystac (relative to the JSON), absolute, ``file://``;
http(s) through GDAL's ``/vsicurl/``.

Cloud mask: the Scene Classification asset (Earth Search key ``scl``, Planetary Computer ``SCL``),
classes as in an L2A SAFE (geoseg.io.clouds), resampled nearest onto the bands' grid.  An SCL asset
that was not downloaded (its local href is missing, or it is remote while every band is local) gives
``cloud_mask`` None rather than an error or a network read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pystac

from geoseg.errors import MissingBandError, NotAProductError
from geoseg.io.clouds import SCL_MASKED, CloudMask
from geoseg.io.sources.bands import canonical_band
from geoseg.io.sources.scene import SceneSource, dataset_tags, select_bands
from geoseg.io.sources.vrt import BandFile, mask_vrt, stack_vrt

_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-geotiff")
#: what pystac raises for a JSON that is no valid Item (plus KeyError/TypeError/ValueError of a malformed dict)
_PYSTAC_ERRORS = (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError, AttributeError)


def _band_info(asset: pystac.Asset) -> dict:
    """The one band of ``asset``: STAC 1.1 ``bands`` or the eo extension's ``eo:bands`` (read from the asset's
    fields: pystac's EOExtension only answers for Items that declare the extension, which many omit, and does
    not read STAC 1.1 ``bands``)."""
    for key in ("bands", "eo:bands"):
        value = asset.extra_fields.get(key)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            return value[0]
    return {}


def _band_name(key: str, asset: pystac.Asset) -> str | None:
    info = _band_info(asset)
    for candidate in (info.get("name"), info.get("eo:common_name"), info.get("common_name"), key):
        if isinstance(candidate, str) and (canon := canonical_band(candidate)):
            return canon
    return None


def _is_raster(asset: pystac.Asset) -> bool:
    media = str(asset.media_type or "").lower()
    roles = asset.roles if isinstance(asset.roles, list) else []
    if any(media.startswith(t) for t in _RASTER_TYPES):
        return "overview" not in roles and "thumbnail" not in roles
    return not media and "data" in roles


def _resolve(asset: pystac.Asset, origin: str, band: str) -> str:
    """The GDAL name of ``asset``'s file: its href made absolute by pystac (relative to the Item JSON), a local
    path checked to exist, http(s) through ``/vsicurl/``, other schemes (s3://...) as they are."""
    href = asset.get_absolute_href() or asset.href
    url = urlparse(href)
    if url.scheme in ("http", "https"):
        return "/vsicurl/" + href
    if url.scheme == "file":
        local = Path(unquote(url.path))
    elif url.scheme in ("", ) or len(url.scheme) == 1:  # a path, or a Windows drive letter
        local = Path(href)
    else:
        return href  # s3://... and others: GDAL's own virtual file systems decide
    if not local.is_file():
        raise MissingBandError(f"{origin}: the asset of band {band} ({asset.href}) does not exist at {local}; "
                               "download the assets next to the Item or fix its hrefs")
    return str(local.resolve())


def _radiometry(asset: pystac.Asset) -> tuple[float, float, float | None]:
    """(scale, offset, nodata) from ``raster:bands`` (the raster extension's fields, read directly for the
    same reason as :func:`_band_info`), else the STAC 1.1 band's own ``scale``/``offset``/``nodata``."""
    rb = asset.extra_fields.get("raster:bands")
    info = rb[0] if isinstance(rb, list) and rb and isinstance(rb[0], dict) else _band_info(asset)
    nodata = info.get("nodata", asset.extra_fields.get("nodata"))
    return (float(info.get("scale", 1.0)), float(info.get("offset", 0.0)),
            None if nodata is None or isinstance(nodata, str) else float(nodata))


def _load(p: Path) -> tuple[pystac.Item, Any, Any]:
    """The Item at ``p`` read by pystac, its acquisition time as the JSON gives it (``datetime`` or
    ``start_datetime``, or None) and its ``id`` as given (or None).  pystac insists on ``id``, ``geometry``,
    ``stac_version`` and a datetime; an Item missing them is still read (with a placeholder id/datetime that
    geoseg never passes on): geoseg needs its assets.  Every failure is one NotAProductError line."""
    try:
        doc = pystac.StacIO.default().read_json(str(p))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise NotAProductError(f"{p}: not a readable STAC Item JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != "Feature" or not isinstance(doc.get("assets"), dict):
        raise NotAProductError(f"{p}: not a STAC Item (a 'Feature' with 'assets'); pass one Item JSON")
    raw = doc.get("properties")
    props: dict = raw if isinstance(raw, dict) else {}
    acquired = props.get("datetime") or props.get("start_datetime")
    assets = {k: a if isinstance(a.get("href"), str) else {**a, "href": ""}  # no href: refused if it is a band
              for k, a in doc["assets"].items() if isinstance(a, dict)}
    filled = {"stac_version": "1.0.0", "id": p.stem, "geometry": None, "links": [], **doc, "assets": assets}
    if not (props.get("datetime") or (props.get("start_datetime") and props.get("end_datetime"))):
        filled["properties"] = {**props, "datetime": "1970-01-01T00:00:00Z"}
    try:
        item = pystac.Item.from_dict(filled, href=str(p.resolve()), migrate=False, preserve_dict=False)
    except _PYSTAC_ERRORS as exc:
        text = f"missing field {exc}" if isinstance(exc, KeyError) else \
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotAProductError(f"{p}: not a valid STAC Item ({text}); fix it or pass another Item JSON") from None
    return item, acquired, doc.get("id")


def _sensor_level(props: dict, collection: str) -> tuple[str | None, str | None, str | None]:
    platform = str(props.get("platform", "")).lower()
    text = f"{collection} {props.get('processing:level', '')} {props.get('s2:product_type', '')}".lower()
    sensor = "sentinel-2" if "sentinel-2" in platform or "sentinel-2" in text else \
        next((s for s in ("landsat-8", "landsat-9") if s in platform), None)
    level = "L2A" if "l2a" in text else "L1C" if "l1c" in text else \
        "L2" if sensor and sensor.startswith("landsat") and "l2" in text else None
    quantity = {"L1C": "toa_reflectance", "L2A": "surface_reflectance", "L2": "surface_reflectance"}.get(level or "")
    return sensor, level, quantity


def _cloud_mask(item: pystac.Item, origin: str, scene: str, bands_local: bool) -> CloudMask | None:
    """The Item's SCL asset on the grid of the stacked VRT ``scene``, or None (see the module docstring)."""
    hit = next((a for k, a in item.assets.items() if k.lower() == "scl" and a.href), None)
    if hit is None:
        return None
    try:
        path = _resolve(hit, origin, "SCL")
    except MissingBandError:
        return None
    if bands_local and not os.path.isfile(path):
        return None
    return CloudMask(mask_vrt([BandFile("SCL", path)], scene, origin), "scl", path, masked_values=SCL_MASKED)


def read_stac_item(path: str | os.PathLike, bands: Sequence[str] | None = None) -> SceneSource:
    """A local STAC Item JSON, read with pystac, as a :class:`SceneSource` (see the module docstring)."""
    p = Path(path)
    origin = str(p)
    item, acquired, item_id = _load(p)
    assets: dict[str, tuple[str, pystac.Asset]] = {}
    for key, asset in item.assets.items():
        if _is_raster(asset) and (name := _band_name(key, asset)):
            assets.setdefault(name, (key, asset))
    if not assets:
        raise NotAProductError(f"{origin}: no asset of this STAC Item is a known spectral band (keys: "
                               f"{', '.join(item.assets) or 'none'}); geoseg needs one GeoTIFF/COG per band")
    chosen = select_bands(list(assets), bands, origin, "this STAC Item")
    band_files = []
    for name in chosen:
        key, asset = assets[name]
        if not asset.href:
            raise MissingBandError(f"{origin}: asset {key!r} (band {name}) has no href")
        scale, offset, nodata = _radiometry(asset)
        band_files.append(BandFile(name, _resolve(asset, origin, name), 1, scale, offset, nodata))
    props = item.properties
    sensor, level, quantity = _sensor_level(props, str(item.collection_id or ""))
    meta = {"item_id": item_id, "collection": item.collection_id,
            "tile_id": props.get("s2:mgrs_tile") or props.get("grid:code") or props.get("mgrs:grid_square"),
            "processing_baseline": props.get("s2:processing_baseline"), "cloud_cover": props.get("eo:cloud_cover")}
    metadata = {k: str(v) for k, v in meta.items() if v is not None}
    xml = stack_vrt(band_files, dataset_tags(sensor, level, quantity, acquired, metadata), origin)
    mask = _cloud_mask(item, origin, xml, all(os.path.isfile(bf.path) for bf in band_files))
    return SceneSource(xml, origin, tuple(chosen), sensor, level, quantity, acquired, metadata, mask)
