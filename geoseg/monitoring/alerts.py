"""Alerts of an AOI: polygons derived from the pixel state, merged with the previous ones (stable ids, run
stamps), and the outputs they go to: ``alerts.gpkg`` (layers ``alerts``, styled by confidence, and
``aoi_summary``, one row per scene), ``alerts_gfw.tif`` (the GFW date-confidence COG, + ``.qml``) and
``changes_since_<date>.geojson`` (RFC 7946, WGS84: the alerts new or changed by a run).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._util.atomic import atomic_path, atomic_write_text
from geoseg.io.area import area_model
from geoseg.io.output import GPKG_DATASET_OPTIONS
from geoseg.io.warp import Grid, reproject_geometry, to_crs
from geoseg.monitoring import state as ms
from geoseg.monitoring.config import Scene
from geoseg.monitoring.rasters import TifBlocks

__all__ = ["ALERT_FIELDS", "SUMMARY_FIELDS", "Patch", "top_left", "patch_alerts", "merge_alerts", "read_alert_layers",
           "write_alerts_gpkg", "summary_row", "gfw_writer", "write_gfw_style", "write_changes_geojson", "alert_totals"]

ALERT_FIELDS = ("alert_id", "aoi_id", "first_detected", "last_detected", "confidence", "status", "area_ha",
                "n_pixels", "n_high", "n_low", "n_rejected", "model_id", "run_id", "created_at", "updated_at")
SUMMARY_FIELDS = ("scene_id", "date", "run_id", "aoi_id", "observed_fraction", "alerts_low", "alerts_high",
                  "alerts_rejected", "area_low_ha", "area_high_ha", "late")
_CONTENT = ("first_detected", "last_detected", "confidence", "status", "area_ha", "n_pixels", "n_high",
            "n_low", "n_rejected", "geometry_wkb")


def _iso(days: int) -> str:
    d = ms.from_days(days)
    if d is None:
        raise ValueError("no date (NONE) where an alert needs one")
    return d.isoformat()


# -- deriving and merging ---------------------------------------------------------------------------------


def _area_ha(geoms_crs: list, grid: Grid) -> list[float]:
    """Ground areas (ha) of geometries in the grid's CRS: in its own units where it is equal-area at the
    AOI's scale (:mod:`geoseg.io.area`), else geodesic on WGS84 (geographic CRSs, Web Mercator, ...)."""
    from pyproj import Geod
    from rasterio.crs import CRS

    model = area_model(grid.crs_wkt, grid.transform, grid.width, grid.height)
    if model.kind == "projected":
        return [round(g.area * model.factor**2 / 1e4, 6) for g in geoms_crs]
    crs = CRS.from_wkt(grid.crs_wkt)
    if not crs.is_geographic:
        geoms_crs = [to_crs(g, crs, CRS.from_epsg(4326)) for g in geoms_crs]
    geod = Geod(ellps="WGS84")
    return [round(abs(geod.geometry_area_perimeter(g)[0]) / 1e4, 6) for g in geoms_crs]


@dataclass(frozen=True)
class Patch:
    """One 4-connected patch of alert pixels sharing a first-loss date: its polygon in pixel coordinates of the
    AOI grid (integer vertices) and its counts (:mod:`geoseg.monitoring.patches` finds them block by block)."""

    polygon: Any  # shapely Polygon, pixel coordinates
    first: int  # first-loss date (days)
    n_pixels: int
    n_high: int
    n_low: int
    last: int  # latest loss date of its pixels (days; -1: none)


def top_left(patch: Any) -> tuple[int, int]:
    """(row, col) of a pixel polygon's first pixel in row-major order: its top row, leftmost there."""
    minx, miny, maxx, maxy = patch.bounds
    xs = [x for x, y in patch.exterior.coords if abs(y - miny) < 1e-9]
    return int(round(miny)), int(round(min(xs)))


def _alert_id(aoi_id: str, first_day: int, patch: Any) -> str:
    """A stable id: the AOI, the first-loss date and the patch's top-left pixel (top row, leftmost there)."""
    top, col = top_left(patch)
    key = f"{aoi_id}|{_iso(first_day)}|{top},{col}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def patch_alerts(aoi_id: str, patches: list[Patch], grid: Grid, min_area_ha: float = 0.0) -> list[dict]:
    """Alert records (polygons in the grid's CRS, areas, counts, stable ids) of ``patches``, those smaller
    than ``min_area_ha`` left out, sorted by (first_detected, alert_id)."""
    import shapely.affinity
    from shapely.geometry import MultiPolygon

    g = grid.affine
    crs_geoms = [shapely.affinity.affine_transform(p.polygon, (g.a, g.b, g.d, g.e, g.c, g.f)) for p in patches]
    areas = _area_ha(crs_geoms, grid)
    out = []
    for p, geom, area in zip(patches, crs_geoms, areas):
        if area < min_area_ha:
            continue
        conf_name = "high" if p.n_high else ("low" if p.n_low else "rejected")
        status = {"high": "confirmed", "low": "unconfirmed", "rejected": "rejected"}[conf_name]
        if geom.geom_type == "Polygon":
            geom = MultiPolygon([geom])
        out.append({
            "alert_id": _alert_id(aoi_id, p.first, p.polygon),
            "aoi_id": aoi_id,
            "first_detected": _iso(p.first),
            "last_detected": _iso(p.last) if p.last >= 0 else _iso(p.first),
            "confidence": conf_name,
            "status": status,
            "area_ha": area,
            "n_pixels": p.n_pixels,
            "n_high": p.n_high,
            "n_low": p.n_low,
            "n_rejected": p.n_pixels - p.n_high - p.n_low,
            "geometry": geom,
        })
    out.sort(key=lambda a: (a["first_detected"], a["alert_id"]))
    return out


def _content(a: dict) -> tuple:
    return tuple(a["geometry"].wkb_hex if k == "geometry_wkb" else a[k] for k in _CONTENT)


def merge_alerts(previous: list[dict], current: list[dict], model_id: str, run_id: str, now: str
                 ) -> tuple[list[dict], int, int]:
    """Keep ids/created_at; stamp run_id/updated_at on new or changed alerts; alerts no longer in the
    state (their pixels started a newer event) are kept with status ``superseded``. Returns
    (alerts, n_new, n_updated)."""
    prev = {a["alert_id"]: a for a in previous}
    out, n_new, n_upd = [], 0, 0
    seen = set()
    for a in current:
        seen.add(a["alert_id"])
        p = prev.get(a["alert_id"])
        if p is None:
            out.append({**a, "model_id": model_id, "run_id": run_id, "created_at": now, "updated_at": now})
            n_new += 1
        elif _content(p) != _content(a):
            out.append({**a, "model_id": model_id, "run_id": run_id, "created_at": p["created_at"], "updated_at": now})
            n_upd += 1
        else:
            out.append(p)
    for a in previous:
        if a["alert_id"] not in seen:
            if a["status"] != "superseded":
                a = {**a, "status": "superseded", "run_id": run_id, "updated_at": now}
                n_upd += 1
            out.append(a)
    out.sort(key=lambda a: (a["first_detected"], a["alert_id"]))
    return out, n_new, n_upd


def summary_row(aoi_id: str, scene: Scene, run_id: str, n_observed: int, n_inside: int,
                alerts: list[dict], late: bool) -> dict:
    """The ``aoi_summary`` row of one scene: observed fraction of the AOI (``n_observed`` of its ``n_inside``
    pixels), current alerts and area."""
    active = [a for a in alerts if a["status"] != "superseded"]
    observed = float(n_observed / max(1, n_inside))
    return {"scene_id": scene.id, "date": scene.date.isoformat(), "run_id": run_id, "aoi_id": aoi_id,
            "observed_fraction": round(observed, 6),
            "alerts_low": sum(a["confidence"] == "low" for a in active),
            "alerts_high": sum(a["confidence"] == "high" for a in active),
            "alerts_rejected": sum(a["confidence"] == "rejected" for a in active),
            "area_low_ha": round(sum(a["area_ha"] for a in active if a["confidence"] == "low"), 6),
            "area_high_ha": round(sum(a["area_ha"] for a in active if a["confidence"] == "high"), 6),
            "late": int(late)}


# -- alerts.gpkg -------------------------------------------------------------------------------------------


def read_alert_layers(path: Path) -> tuple[list[dict], list[dict]]:
    """(alerts with their geometries, ``aoi_summary`` rows) of ``alerts.gpkg``; empty lists if it is absent."""
    import pyogrio

    if not path.exists():
        return [], []
    gdf = pyogrio.read_dataframe(path, layer="alerts")
    alerts = []
    for rec, geom in zip(gdf.drop(columns="geometry").to_dict("records"), gdf.geometry):
        rec["geometry"] = geom
        alerts.append(rec)
    summ = pyogrio.read_dataframe(path, layer="aoi_summary", read_geometry=False)
    return alerts, summ.to_dict("records")


def write_alerts_gpkg(path: Path, alerts: list[dict], summary: list[dict], grid: Grid) -> None:
    """``alerts.gpkg`` (layers ``alerts``, with its default QGIS style, and ``aoi_summary``), atomically."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    from geoseg.delivery.style import ALERT_CATEGORIES, embed_gpkg_style

    with atomic_path(path) as tmp:
        cols = {k: [a[k] for a in alerts] for k in ALERT_FIELDS}
        gdf = gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([a["geometry"] for a in alerts]),
                               crs=grid.crs_wkt)
        pyogrio.write_dataframe(gdf, tmp, layer="alerts", driver="GPKG", geometry_type="MultiPolygon",
                                dataset_options=GPKG_DATASET_OPTIONS)
        pyogrio.write_dataframe(pd.DataFrame(summary, columns=SUMMARY_FIELDS), tmp, layer="aoi_summary",
                                driver="GPKG", append=True)
        # default QGIS style of the alerts layer: categorized by confidence (low / high / rejected)
        embed_gpkg_style(tmp, "alerts", ALERT_CATEGORIES, field="confidence", style_name="alerts by confidence",
                         description="geoseg alerts by confidence")


def alert_totals(gpkg: Path) -> dict:
    """Current (confirmed or unconfirmed) alerts of ``alerts.gpkg``: count, by confidence, hectares."""
    alerts, _ = read_alert_layers(gpkg)
    active = [a for a in alerts if a["status"] in ("confirmed", "unconfirmed")]
    return {"alerts_total": len(active), "alerts_high": sum(a["confidence"] == "high" for a in active),
            "alerts_low": sum(a["confidence"] == "low" for a in active),
            "alert_area_ha": round(sum(float(a["area_ha"]) for a in active), 4)}


# -- alerts_gfw.tif and the changes file -----------------------------------------------------------------


def gfw_writer(path: Path, grid: Grid) -> TifBlocks:
    """``alerts_gfw.tif`` (a COG once published), written block by block (``write(window,
    ms.gfw_encode(state)[None])``)."""
    return TifBlocks(path, grid, 1, "uint16", nodata=0,
                     descriptions=("GFW date-confidence: conf*10000 + days since 2014-12-31",),
                     tags={"GEOSEG_PRODUCT": "alerts_gfw"}, cog=True)


def write_gfw_style(path: Path) -> None:
    """The GFW raster's QGIS style beside it, the first time (a static style)."""
    if not path.with_suffix(".qml").exists():
        from geoseg.delivery.style import write_gfw_qml

        write_gfw_qml(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


def write_changes_geojson(path: Path, alerts: list[dict], grid: Grid) -> None:
    """RFC 7946 FeatureCollection in WGS84 (lon/lat, counter-clockwise exterior rings)."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    t = Transformer.from_crs(grid.crs_wkt, "EPSG:4326", always_xy=True)
    feats = []
    for a in alerts:
        g = reproject_geometry(a["geometry"], t)
        g = shapely.set_precision(g, 1e-7)  # (may reorient rings: orient afterwards)
        g = shapely.MultiPolygon([orient(p, 1.0) for p in getattr(g, "geoms", [g])])
        props = {k: a[k] for k in ALERT_FIELDS}
        feats.append({"type": "Feature", "id": a["alert_id"], "geometry": mapping(g), "properties": props})
    doc = {"type": "FeatureCollection", "features": feats}
    atomic_write_text(path, json.dumps(doc, default=_json_default))
