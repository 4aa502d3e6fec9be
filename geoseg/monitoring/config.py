"""The monitoring config (``geoseg monitor run CONFIG.yaml``): areas of interest, the scene inventory (a
folder glob with dates in the paths, or a STAC ItemCollection), forest classes, rules and the output folder.

:func:`load_config` reads and checks it; relative paths are relative to the config file.  Every problem is
one :class:`~geoseg.errors.ConfigError` line (exit 3) naming the key to fix.  See ``docs/monitor.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, InputFileError, ParameterError
from geoseg.monitoring import state as ms

__all__ = ["AOI", "Scene", "MonitorConfig", "load_config"]

_DATE_RE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class AOI:
    id: str
    geometry: Any  # shapely geometry
    crs: Any  # rasterio CRS


@dataclass(frozen=True)
class Scene:
    id: str
    date: _dt.date
    path: str

    @property
    def key(self) -> tuple[int, str]:
        return (ms.to_days(self.date), self.id)


@dataclass
class MonitorConfig:
    path: Path
    aois: list[AOI]
    scenes: list[Scene]
    kind: str  # "landcover" (class rasters) or "scene" (imagery + model)
    model: str | None
    model_id: str
    forest: list[str | int]
    rules: ms.Rules
    output: Path
    band: int = 1
    min_area_ha: float = 0.0  # alerts smaller than this are left out of alerts.gpkg (not of the state/GFW raster)
    extra: dict = field(default_factory=dict)


def _resolve(base: Path, p: str) -> Path:
    q = Path(os.path.expanduser(str(p)))
    return q if q.is_absolute() else (base / q)


def _parse_date(text: str, pattern: re.Pattern | None, where: str) -> _dt.date:
    if pattern is not None:
        m = pattern.search(text)
        if not m:
            raise ConfigError(f"no date matching date_pattern in {where}; fix scenes.date_pattern")
        s = m.group(1) if m.groups() else m.group(0)
        s = re.sub(r"\D", "", s)
    else:
        ms_ = list(_DATE_RE.finditer(text))
        if not ms_:
            raise ConfigError(f"no acquisition date (YYYYMMDD or YYYY-MM-DD) in {where}; rename the file or "
                              "set scenes.date_pattern")
        s = "".join(ms_[-1].groups())
    try:
        return _dt.datetime.strptime(s[:8], "%Y%m%d").date()
    except ValueError:
        raise ConfigError(f"{s!r} in {where} is not a valid YYYYMMDD date") from None


def _is_product_folder(p: Path) -> bool:
    """A folder that is one scene: a Sentinel-2 .SAFE or a Landsat Collection 2 folder."""
    from geoseg.io.sources.landsat import is_landsat
    from geoseg.io.sources.sentinel2 import is_safe

    return p.is_dir() and (is_safe(p) or is_landsat(p))


def _glob_scenes(base: Path, spec: dict) -> list[Scene]:
    pattern = spec["glob"]
    root = _resolve(base, spec.get("root", "."))
    dp = re.compile(spec["date_pattern"]) if spec.get("date_pattern") else None
    out = []
    for p in sorted(root.glob(pattern)):
        if not (p.is_file() or _is_product_folder(p)):
            continue
        rel = p.relative_to(root).as_posix()
        out.append(Scene(id=rel, date=_parse_date(rel, dp, str(p)), path=str(p)))
    return out


def _stac_scenes(base: Path, spec: dict) -> list[Scene]:
    path = _resolve(base, spec["stac"])
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"STAC ItemCollection {path} does not exist; fix scenes.stac") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read STAC ItemCollection {path} ({e}); give a JSON FeatureCollection") from None
    items = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{path} is not a STAC ItemCollection (no 'features' list)")
    asset_key = spec.get("asset")
    out = []
    for it in items:
        iid = it.get("id")
        props = it.get("properties") or {}
        dt = props.get("datetime") or props.get("start_datetime")
        assets = it.get("assets") or {}
        if not iid or not dt or not assets:
            raise ConfigError(f"STAC item {iid!r} in {path} needs an id, properties.datetime and assets")
        if asset_key is None:
            if len(assets) != 1:
                raise ConfigError(f"STAC item {iid!r} has several assets ({', '.join(assets)}); set scenes.asset")
            key = next(iter(assets))
        else:
            key = asset_key
            if key not in assets:
                raise ConfigError(f"STAC item {iid!r} has no asset {key!r} (has {', '.join(assets)})")
        href = assets[key]["href"]
        href = href[7:] if href.startswith("file://") else href
        out.append(Scene(id=str(iid), date=_dt.date.fromisoformat(str(dt)[:10]),
                         path=str(_resolve(path.parent, href))))
    return out


def _load_aois(base: Path, spec: Any, id_field: str) -> list[AOI]:
    import pyogrio
    from rasterio.crs import CRS

    path = _resolve(base, spec)
    if not path.exists():
        raise InputFileError(f"AOI file {path} does not exist; fix 'aois' in the config")
    try:
        gdf = pyogrio.read_dataframe(path)
    except Exception as e:  # noqa: BLE001 - any GDAL read failure is bad input
        raise ConfigError(f"cannot read AOI file {path} ({e}); give a GeoJSON or GeoPackage of polygons") from None
    if id_field not in gdf.columns:
        raise ConfigError(f"AOI file {path} has no field {id_field!r} (fields: {', '.join(map(str, gdf.columns))}); "
                          "set aoi_id_field")
    if gdf.crs is None:
        raise ConfigError(f"AOI file {path} has no CRS; save it with one (GeoJSON is WGS84)")
    crs = CRS.from_user_input(gdf.crs.to_wkt())
    out, seen = [], set()
    for ident, geom in zip(gdf[id_field], gdf.geometry):
        ident = str(ident)
        if not _ID_RE.match(ident):
            raise ConfigError(f"AOI id {ident!r} must be letters, digits, '_', '-' or '.' (it names a folder)")
        if ident in seen:
            raise ConfigError(f"AOI id {ident!r} appears twice in {path}; ids must be unique")
        if geom is None or geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise ConfigError(f"AOI {ident!r} in {path} is not a polygon")
        seen.add(ident)
        out.append(AOI(ident, geom, crs))
    if not out:
        raise ConfigError(f"AOI file {path} has no features")
    return out


def _read_mapping(path: Path) -> dict:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"config {path} does not exist; give the path of a monitoring YAML file") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path} ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a YAML mapping (aois, scenes, output, ...)")
    for key in ("aois", "scenes", "output"):
        if key not in raw:
            raise ConfigError(f"config {path} lacks '{key}'; see docs/monitor.md")
    return raw


def _kind_and_model(raw: dict, base: Path) -> tuple[str, str | None]:
    kind = str(raw.get("kind", "landcover"))
    if kind not in ("landcover", "scene"):
        raise ConfigError(f"kind {kind!r} must be 'landcover' (class rasters) or 'scene' (imagery + model)")
    model = raw.get("model")
    if kind == "scene" and not model:
        raise ConfigError("kind: scene needs 'model' (a model package path or 'default')")
    if model and model != "default" and not str(model).startswith(("hf:", "http")):
        model = str(_resolve(base, model))
    return kind, model


def _scenes(raw: dict, base: Path) -> list[Scene]:
    spec = raw["scenes"]
    if isinstance(spec, str):
        spec = {"glob": spec}
    if not isinstance(spec, dict) or not ("glob" in spec or "stac" in spec):
        raise ConfigError("'scenes' needs 'glob' (a folder glob with dates in the paths) or 'stac' (an ItemCollection)")
    scenes = _stac_scenes(base, spec) if "stac" in spec else _glob_scenes(base, spec)
    ids = [s.id for s in scenes]
    if len(set(ids)) != len(ids):
        raise ConfigError("scene ids in the inventory are not unique")
    return scenes


def _rules(raw: dict) -> ms.Rules:
    try:
        return ms.Rules(confirm_days=int(raw.get("confirm_days", 90)), reject_after=int(raw.get("reject_after", 2)),
                        new_event_days=int(raw.get("new_event_days", 180)))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad rule in config: {e}") from None


def _min_area_ha(raw: dict) -> float:
    from geoseg.change.api import parse_min_area

    try:
        return parse_min_area(raw.get("min_area", 0.0))
    except ParameterError as e:
        raise ConfigError(str(e).replace("--min-area", "min_area")) from None


def _model_id(raw: dict, kind: str, model: str | None) -> str:
    model_id = str(raw.get("model_id") or "")
    if kind == "scene" and not model_id:
        from geoseg.model.package import read_card, resolve

        model_id = read_card(resolve(str(model))).id  # also checks the package early (exit 4)
    return model_id or "landcover-input"


def load_config(path: str | os.PathLike) -> MonitorConfig:
    """Read and check a monitoring config (YAML); relative paths are relative to the config file."""
    from geoseg.change.classify import forest_items

    path = Path(path)
    raw = _read_mapping(path)
    base = path.resolve().parent
    kind, model = _kind_and_model(raw, base)
    scenes = _scenes(raw, base)
    rules = _rules(raw)
    forest = forest_items(raw.get("forest", "trees"))
    min_area_ha = _min_area_ha(raw)
    model_id = _model_id(raw, kind, model)
    return MonitorConfig(path=path, aois=_load_aois(base, raw["aois"], str(raw.get("aoi_id_field", "id"))),
                         scenes=scenes, kind=kind, model=model, model_id=model_id, forest=forest, rules=rules,
                         output=_resolve(base, raw["output"]), band=int(raw.get("band", 1)),
                         min_area_ha=min_area_ha)
