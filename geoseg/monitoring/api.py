"""``geoseg monitor run``: the scheduled, idempotent, crash-safe forest-loss monitoring job.

One run reads a YAML config (areas of interest, a scene inventory, forest classes, rules, an output
folder) and, per AOI, applies every scene not yet processed to the AOI's per-pixel alert state
(:mod:`geoseg.monitor_state`), in acquisition order, then rewrites the AOI's outputs.  See
``docs/monitor.md`` for the config, the outputs and the guarantees.

Per AOI, in ``OUT/<aoi_id>/``::

    .lock                     fcntl lock: one run per AOI at a time
    ledger.sqlite             scenes (processed scenes) and runs tables
    state.tif                 PixelState arrays, one int32 band each, on the AOI grid; tags hold
                              last_date, n_observations, the applied scene ids (the commit record)
    observations/<key>.tif    per-scene observation (uint8: 0 non-forest, 1 forest, 255 not observed)
    alerts.gpkg               layers ``alerts`` (default QGIS style: by confidence) and ``aoi_summary``
    alerts_gfw.tif            GFW date-confidence COG (uint16 conf*10000 + days since 2014-12-31)
    alerts_gfw.qml            its QGIS style (low orange, high red, no alert transparent)
    report.html               alert list, area by confidence, scenes applied (rewritten by each run)
    changes_since_<date>.geojson   RFC 7946 (WGS84): only the alerts new or changed by this run
    item.json                 STAC Item of the AOI's outputs (checksums), written after report.html

and in ``OUT/``: ``report.html`` (index of every AOI: alerts and area by confidence, links to the AOI
reports) and ``catalog.json`` (STAC Catalog of the AOI items), rewritten at the end of a run that
delivered anything.

Commit protocol per scene (so a crash anywhere is recoverable): the observation raster, then
``alerts.gpkg`` and ``alerts_gfw.tif`` are written to temporary names and renamed into place, then
``state.tif`` (temp + ``os.replace``): that rename is *the* commit, because the state's tags list
the scene ids it includes; then the ledger row is written (one transaction).  On start the ledger is
reconciled with the state's applied list (a crash between the state rename and the ledger write
loses nothing), and a scene the state does not include is processed again from the committed state,
giving identical results.

Test hook: ``GEOSEG_MONITOR_CRASH_AFTER=<step>[:<n>]`` makes the process ``os._exit(86)`` right after
the ``n``-th (default 1st) occurrence of ``step`` (``observation``, ``outputs``, ``state``,
``ledger``, ``changes``), to test crash recovery.  Never set it in production.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from geoseg.errors import (
    ConfigError,
    EmptySceneError,
    InputError,
    InputFileError,
    MonitorLockedError,
    OutputError,
    ParameterError,
)
from geoseg.io.output import GPKG_DATASET_OPTIONS
from geoseg.monitoring import state as ms

__all__ = ["MonitorConfig", "AOI", "Scene", "MonitorLockedError", "load_config", "run_monitor", "EXIT_LOCKED",
           "CRASH_ENV"]

EXIT_LOCKED = MonitorLockedError.exit_code  # 75, EX_TEMPFAIL: another run holds an AOI's lock; try again later
CRASH_ENV = "GEOSEG_MONITOR_CRASH_AFTER"
OBS_NODATA = 255
ITEM_NAME = "item.json"  # per-AOI STAC Item
INDEX_NAME = "report.html"  # run-level index: OUT/report.html (and the STAC Catalog OUT/catalog.json)
STATE_BANDS = ("baseline", "confidence", "first_loss", "last_loss", "n_loss", "n_forest_again", "last_clear")
STATE_DTYPES = {"baseline": np.uint8, "confidence": np.uint8, "first_loss": np.int32, "last_loss": np.int32,
                "n_loss": np.uint16, "n_forest_again": np.uint8, "last_clear": np.int32}
_DATE_RE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# -- config --------------------------------------------------------------------------------------------


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


def _glob_scenes(base: Path, spec: dict) -> list[Scene]:
    pattern = spec["glob"]
    root = _resolve(base, spec.get("root", "."))
    dp = re.compile(spec["date_pattern"]) if spec.get("date_pattern") else None
    out = []
    for p in sorted(root.glob(pattern)):
        if not p.is_file():
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


def load_config(path: str | os.PathLike) -> MonitorConfig:
    """Read and check a monitoring config (YAML); relative paths are relative to the config file."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"config {path} does not exist; give the path of a monitoring YAML file") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path} ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a YAML mapping (aois, scenes, output, ...)")
    base = path.resolve().parent
    for key in ("aois", "scenes", "output"):
        if key not in raw:
            raise ConfigError(f"config {path} lacks '{key}'; see docs/monitor.md")
    kind = str(raw.get("kind", "landcover"))
    if kind not in ("landcover", "scene"):
        raise ConfigError(f"kind {kind!r} must be 'landcover' (class rasters) or 'scene' (imagery + model)")
    model = raw.get("model")
    if kind == "scene" and not model:
        raise ConfigError("kind: scene needs 'model' (a model package path or 'default')")
    if model and model != "default" and not str(model).startswith(("hf:", "http")):
        model = str(_resolve(base, model))
    scenes_spec = raw["scenes"]
    if isinstance(scenes_spec, str):
        scenes_spec = {"glob": scenes_spec}
    if not isinstance(scenes_spec, dict) or not ("glob" in scenes_spec or "stac" in scenes_spec):
        raise ConfigError("'scenes' needs 'glob' (a folder glob with dates in the paths) or 'stac' (an ItemCollection)")
    scenes = _stac_scenes(base, scenes_spec) if "stac" in scenes_spec else _glob_scenes(base, scenes_spec)
    ids = [s.id for s in scenes]
    if len(set(ids)) != len(ids):
        raise ConfigError("scene ids in the inventory are not unique")
    try:
        rules = ms.Rules(confirm_days=int(raw.get("confirm_days", 90)), reject_after=int(raw.get("reject_after", 2)),
                         new_event_days=int(raw.get("new_event_days", 180)))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad rule in config: {e}") from None
    from geoseg.change.api import _forest_items, parse_min_area

    forest = _forest_items(raw.get("forest", "trees"))
    try:
        min_area_ha = parse_min_area(raw.get("min_area", 0.0))
    except ParameterError as e:
        raise ConfigError(str(e).replace("--min-area", "min_area")) from None
    model_id = str(raw.get("model_id") or "")
    if kind == "scene" and not model_id:
        from geoseg.model.package import read_card, resolve

        model_id = read_card(resolve(model)).id  # also checks the package early (exit 4)
    model_id = model_id or "landcover-input"
    return MonitorConfig(path=path, aois=_load_aois(base, raw["aois"], str(raw.get("aoi_id_field", "id"))),
                         scenes=scenes, kind=kind, model=model, model_id=model_id, forest=forest, rules=rules,
                         output=_resolve(base, raw["output"]), band=int(raw.get("band", 1)),
                         min_area_ha=min_area_ha)


# -- grids and reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    crs_wkt: str
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    width: int
    height: int

    @property
    def affine(self):
        from affine import Affine

        return Affine(*self.transform[:6])


def _aoi_in(aoi: AOI, crs):
    from pyproj import Transformer

    if aoi.crs == crs:
        return aoi.geometry
    return _reproject(aoi.geometry, Transformer.from_crs(aoi.crs.to_wkt(), crs.to_wkt(), always_xy=True))


def _reproject(geom, transformer):
    import shapely

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fn)


def grid_for(aoi: AOI, scene_path: str) -> Grid:
    """The AOI grid: the scene's pixel lattice over the AOI's bounds (rounded outwards)."""
    import math

    import rasterio

    with rasterio.open(scene_path) as src:
        if src.crs is None:
            raise InputError(f"{scene_path} has no CRS; monitoring needs georeferenced scenes")
        geom = _aoi_in(aoi, src.crs)
        inv = ~src.transform
        xs, ys = [], []
        x0, y0, x1, y1 = geom.bounds
        for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1)):
            c, r = inv @ (x, y)
            xs.append(c)
            ys.append(r)
        c0, r0 = math.floor(min(xs) + 1e-9), math.floor(min(ys) + 1e-9)
        c1, r1 = math.ceil(max(xs) - 1e-9), math.ceil(max(ys) - 1e-9)
        t = src.transform @ src.transform.translation(c0, r0)
        return Grid(src.crs.to_wkt(), tuple(t)[:6], max(1, c1 - c0), max(1, r1 - r0))


def read_on_grid(path: str, grid: Grid, bands: Sequence[int] | None = None, resampling: str = "nearest"
                 ) -> tuple[np.ndarray, Any, dict]:
    """Read ``bands`` of ``path`` on ``grid``: a windowed (boundless) read when the scene's lattice matches,
    else a WarpedVRT restricted to the grid. Returns (data (bands,h,w), nodata, profile bits, covered),
    ``covered`` being False where the grid lies outside the scene (needed when the scene has no nodata)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    if not os.path.exists(path):
        raise InputFileError(f"scene {path} does not exist; fix the inventory")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"cannot open scene {path} as a raster ({e})") from None
    with src:
        bands = list(bands or range(1, src.count + 1))
        nodata = src.nodata
        meta = {"descriptions": [src.descriptions[b - 1] for b in bands], "tags": src.tags(),
                "band_tags": src.tags(bands[0]), "dtype": src.dtypes[bands[0] - 1]}
        gcrs = CRS.from_wkt(grid.crs_wkt)
        a = src.transform
        g = grid.affine
        same = src.crs == gcrs and all(abs(u - v) < 1e-9 * max(1.0, abs(u)) for u, v in
                                       zip((a.a, a.b, a.d, a.e), (g.a, g.b, g.d, g.e)))
        if same:
            c, r = (~a) @ (g.c, g.f)
            if abs(c - round(c)) < 1e-6 and abs(r - round(r)) < 1e-6:
                win = Window(round(c), round(r), grid.width, grid.height)
                fill = nodata if nodata is not None else 0
                data = src.read(bands, window=win, boundless=True, fill_value=fill)
                rows = np.arange(win.row_off, win.row_off + grid.height)
                cols = np.arange(win.col_off, win.col_off + grid.width)
                covered = ((rows >= 0) & (rows < src.height))[:, None] & ((cols >= 0) & (cols < src.width))[None, :]
                return data, nodata, meta, covered
        if nodata is not None:
            with WarpedVRT(src, crs=gcrs, transform=g, width=grid.width, height=grid.height,
                           resampling=getattr(Resampling, resampling), src_nodata=nodata, nodata=nodata) as vrt:
                return vrt.read(bands), nodata, meta, np.ones((grid.height, grid.width), bool)
        with WarpedVRT(src, crs=gcrs, transform=g, width=grid.width, height=grid.height,
                       resampling=getattr(Resampling, resampling), add_alpha=True) as vrt:
            return vrt.read(bands), nodata, meta, vrt.read(vrt.count) > 0


def aoi_mask(aoi: AOI, grid: Grid) -> np.ndarray:
    from rasterio.crs import CRS
    from rasterio.features import rasterize

    geom = _aoi_in(aoi, CRS.from_wkt(grid.crs_wkt))
    return rasterize([(geom, 1)], out_shape=(grid.height, grid.width), transform=grid.affine, fill=0,
                     dtype="uint8").astype(bool)


def _forest_values(cfg: MonitorConfig, names: dict[int, str], path: str) -> tuple[int, ...]:
    from geoseg.change.api import resolve_forest_values

    try:
        return resolve_forest_values(cfg.forest, names, path)
    except ParameterError as e:  # a config value, not a command-line option: bad input (exit 3)
        raise ConfigError(str(e).replace("--forest", "'forest' in the config")) from None


def observe(cfg: MonitorConfig, aoi: AOI, grid: Grid, scene: Scene, work: Path) -> np.ndarray:
    """One scene's observation on the AOI grid: uint8 1 forest, 0 not forest, 255 not observed."""
    from geoseg.io.raster import class_names_from_tags

    if cfg.kind == "landcover":
        data, nodata, meta, covered = read_on_grid(scene.path, grid, [cfg.band])
        classes = data[0]
        valid = covered if nodata is None else (classes != nodata) & covered
        names = class_names_from_tags(meta["tags"], meta["band_tags"])
        path = scene.path
    else:
        classes, valid, names, path = _predict_crop(cfg, grid, scene, work)
    valid = valid & aoi_mask(aoi, grid)
    if not valid.any():
        return np.full(valid.shape, OBS_NODATA, np.uint8)
    fv = _forest_values(cfg, names, path)
    forest = np.isin(classes, fv)
    return np.where(valid, forest.astype(np.uint8), OBS_NODATA).astype(np.uint8)


def _predict_crop(cfg: MonitorConfig, grid: Grid, scene: Scene, work: Path):
    """Crop the scene to the AOI grid (windowed read into a temporary GeoTIFF) and predict that crop only."""
    import rasterio
    from rasterio.crs import CRS

    from geoseg.io.raster import class_names_from_tags
    from geoseg.predict.api import predict_scene

    data, nodata, meta, covered = read_on_grid(scene.path, grid, resampling="nearest")
    with tempfile.TemporaryDirectory(dir=work, prefix=".predict-") as tmp:
        crop = Path(tmp) / "crop.tif"
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=data.shape[0],
                       dtype=data.dtype.name, crs=CRS.from_wkt(grid.crs_wkt), transform=grid.affine,
                       compress="deflate")
        if nodata is not None:
            profile["nodata"] = nodata
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(data)
            if any(meta["descriptions"]):
                dst.descriptions = tuple(d or "" for d in meta["descriptions"])
        try:
            res = predict_scene(str(crop), cfg.model, str(Path(tmp) / "out"), overwrite=True, progress=False)
        except EmptySceneError:  # the scene has no valid pixel over this AOI: observed nowhere
            shape = (grid.height, grid.width)
            return np.full(shape, 255, np.uint8), np.zeros(shape, bool), {}, f"model {cfg.model}"
        with rasterio.open(res.landcover) as src:
            classes = src.read(1)
            names = class_names_from_tags(src.tags(), src.tags(1))
            valid = (classes != (src.nodata if src.nodata is not None else 255)) & covered
    return classes, valid, names, f"model {cfg.model}"


# -- state I/O -----------------------------------------------------------------------------------------


def _atomic_tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def _write_tif(path: Path, arrays: np.ndarray, grid: Grid, dtype: str, nodata=None, descriptions=(),
               tags: dict | None = None, cog: bool = False) -> None:
    """Write (bands,h,w) to a temp file, fsync, then os.replace onto ``path``."""
    import rasterio
    import rasterio.shutil
    from rasterio.crs import CRS

    tmp = _atomic_tmp(path)
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=arrays.shape[0], dtype=dtype,
                   crs=CRS.from_wkt(grid.crs_wkt), transform=grid.affine, compress="deflate", tiled=True,
                   blockxsize=256, blockysize=256)
    if nodata is not None:
        profile["nodata"] = nodata
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arrays.astype(dtype))
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
            if tags:
                dst.update_tags(**tags)
        if cog:
            tmp2 = _atomic_tmp(path)
            rasterio.shutil.copy(tmp, tmp2, driver="COG", COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="NEAREST")
            os.unlink(tmp)
            tmp = tmp2
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(tmp) + ".aux.xml")


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temp file, fsync, then os.replace onto ``path`` (as the rasters)."""
    tmp = _atomic_tmp(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_item(folder: Path, aoi_id: str, run_id: str) -> None:
    """The AOI's STAC Item (``item.json``), linked to the run-level ``OUT/catalog.json``."""
    from geoseg.delivery.stac import dumps, monitor_item

    _write_text(folder / ITEM_NAME, dumps(monitor_item(folder, aoi_id=aoi_id, run_id=run_id, updated=_now())))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Committed:
    state: ms.PixelState
    applied: list[str]  # scene ids, in application order
    last_key: tuple[int, str] | None
    fingerprint: str = ""
    late: tuple[str, ...] = ()  # applied scene ids that arrived late (replayed)


def fingerprint(cfg: MonitorConfig, aoi: AOI) -> str:
    """What the state depends on besides the scenes: rules, forest classes, input kind, model, AOI shape."""
    doc = {"rules": [cfg.rules.confirm_days, cfg.rules.reject_after, cfg.rules.new_event_days],
           "forest": [str(f) for f in cfg.forest], "kind": cfg.kind, "band": cfg.band, "model_id": cfg.model_id,
           "aoi": hashlib.sha1(aoi.geometry.wkb + aoi.crs.to_wkt().encode()).hexdigest()}
    return json.dumps(doc, sort_keys=True)


def read_state(path: Path) -> tuple[Grid, Committed]:
    import rasterio

    with rasterio.open(path) as src:
        data = src.read()
        tags = src.tags()
        grid = Grid(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
    arrays = {name: data[i].astype(STATE_DTYPES[name]) for i, name in enumerate(STATE_BANDS)}
    st = ms.PixelState(**arrays, last_date=int(tags["GEOSEG_LAST_DATE"]),
                       n_observations=int(tags["GEOSEG_N_OBSERVATIONS"]))
    lk = json.loads(tags.get("GEOSEG_LAST_KEY", "null"))
    return grid, Committed(st, json.loads(tags["GEOSEG_APPLIED"]), tuple(lk) if lk else None,
                           tags.get("GEOSEG_CONFIG", ""), tuple(json.loads(tags.get("GEOSEG_LATE", "[]"))))


def write_state(path: Path, grid: Grid, c: Committed) -> None:
    arr = np.stack([c.state.arrays()[n].astype(np.int32) for n in STATE_BANDS])
    tags = {"GEOSEG_PRODUCT": "monitor_state", "GEOSEG_LAST_DATE": str(c.state.last_date),
            "GEOSEG_N_OBSERVATIONS": str(c.state.n_observations), "GEOSEG_APPLIED": json.dumps(c.applied),
            "GEOSEG_LAST_KEY": json.dumps(list(c.last_key) if c.last_key else None),
            "GEOSEG_CONFIG": c.fingerprint, "GEOSEG_LATE": json.dumps(list(c.late))}
    _write_tif(path, arr, grid, "int32", descriptions=STATE_BANDS, tags=tags)


# -- ledger ----------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenes (
    scene_id TEXT NOT NULL, aoi_id TEXT NOT NULL, date TEXT NOT NULL, path TEXT NOT NULL,
    model_id TEXT NOT NULL, run_id TEXT NOT NULL, status TEXT NOT NULL, late INTEGER NOT NULL DEFAULT 0,
    observation TEXT, time TEXT NOT NULL, PRIMARY KEY (scene_id, aoi_id));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, aoi_id TEXT NOT NULL, started TEXT NOT NULL, finished TEXT,
    status TEXT NOT NULL, since TEXT, last_date TEXT, scenes INTEGER NOT NULL DEFAULT 0);
"""


def open_ledger(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)  # explicit transactions
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(_SCHEMA)
    return con


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- alerts ------------------------------------------------------------------------------------------------

ALERT_FIELDS = ("alert_id", "aoi_id", "first_detected", "last_detected", "confidence", "status", "area_ha",
                "n_pixels", "n_high", "n_low", "n_rejected", "model_id", "run_id", "created_at", "updated_at")
_CONTENT = ("first_detected", "last_detected", "confidence", "status", "area_ha", "n_pixels", "n_high",
            "n_low", "n_rejected", "geometry_wkb")


def _area_ha(geoms_crs: list, crs) -> list[float]:
    if crs.is_projected:
        f = crs.linear_units_factor[1] ** 2
        return [round(g.area * f / 1e4, 6) for g in geoms_crs]
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    return [round(abs(geod.geometry_area_perimeter(g)[0]) / 1e4, 6) for g in geoms_crs]


def derive_alerts(aoi_id: str, state: ms.PixelState, grid: Grid, min_area_ha: float = 0.0) -> list[dict]:
    """Alert polygons: 4-connected patches of pixels whose current event has the same first-loss date."""
    import shapely
    import shapely.affinity
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.features import rasterize, shapes
    from shapely.geometry import MultiPolygon, shape

    conf, first = state.confidence, state.first_loss
    active = np.isin(conf, (ms.LOW, ms.HIGH, ms.REJECTED)) & (first != ms.NONE)
    if not active.any():
        return []
    crs = CRS.from_wkt(grid.crs_wkt)
    polys, firsts = [], []
    for d in np.unique(first[active]):
        m = active & (first == d)
        for geom, _ in shapes(m.astype(np.uint8), mask=m, connectivity=4, transform=Affine.identity()):
            polys.append(shape(geom))
            firsts.append(int(d))
    labels = rasterize([(p, i + 1) for i, p in enumerate(polys)], out_shape=state.shape, fill=0,
                       transform=Affine.identity(), dtype="int32")
    n = len(polys) + 1
    lab = labels.ravel()
    cnt = np.bincount(lab, minlength=n)
    n_high = np.bincount(lab, weights=(conf == ms.HIGH).ravel(), minlength=n).astype(int)
    n_low = np.bincount(lab, weights=(conf == ms.LOW).ravel(), minlength=n).astype(int)
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, lab, state.last_loss.ravel().astype(np.int64))
    g = grid.affine
    out = []
    crs_geoms = [shapely.affinity.affine_transform(p, (g.a, g.b, g.d, g.e, g.c, g.f)) for p in polys]
    areas = _area_ha(crs_geoms, crs)
    for i, (p, d) in enumerate(zip(polys, firsts), start=1):
        minx, miny, maxx, maxy = p.bounds
        top = int(round(miny))
        xs = [x for x, y in p.exterior.coords if abs(y - miny) < 1e-9]
        col = int(round(min(xs)))
        key = f"{aoi_id}|{ms.from_days(d).isoformat()}|{top},{col}"
        conf_name = "high" if n_high[i] else ("low" if n_low[i] else "rejected")
        status = {"high": "confirmed", "low": "unconfirmed", "rejected": "rejected"}[conf_name]
        if areas[i - 1] < min_area_ha:
            continue
        geom = crs_geoms[i - 1]
        if geom.geom_type == "Polygon":
            geom = MultiPolygon([geom])
        out.append({
            "alert_id": hashlib.sha1(key.encode()).hexdigest()[:16],
            "aoi_id": aoi_id,
            "first_detected": ms.from_days(d).isoformat(),
            "last_detected": ms.from_days(int(last[i])).isoformat() if last[i] >= 0 else ms.from_days(d).isoformat(),
            "confidence": conf_name,
            "status": status,
            "area_ha": areas[i - 1],
            "n_pixels": int(cnt[i]),
            "n_high": int(n_high[i]),
            "n_low": int(n_low[i]),
            "n_rejected": int(cnt[i] - n_high[i] - n_low[i]),
            "geometry": geom,
        })
    out.sort(key=lambda a: (a["first_detected"], a["alert_id"]))
    return out


def _read_alerts(path: Path) -> tuple[list[dict], list[dict]]:
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


def _write_gpkg(path: Path, alerts: list[dict], summary: list[dict], grid: Grid) -> None:
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    from geoseg.delivery.style import ALERT_CATEGORIES, embed_gpkg_style

    tmp = _atomic_tmp(path)
    try:
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
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


SUMMARY_FIELDS = ("scene_id", "date", "run_id", "aoi_id", "observed_fraction", "alerts_low", "alerts_high",
                  "alerts_rejected", "area_low_ha", "area_high_ha", "late")


def _summary_row(aoi_id: str, scene: Scene, run_id: str, obs: np.ndarray, inside: np.ndarray,
                 alerts: list[dict], late: bool) -> dict:
    active = [a for a in alerts if a["status"] != "superseded"]
    observed = float((obs != OBS_NODATA).sum() / max(1, inside.sum()))
    return {"scene_id": scene.id, "date": scene.date.isoformat(), "run_id": run_id, "aoi_id": aoi_id,
            "observed_fraction": round(observed, 6),
            "alerts_low": sum(a["confidence"] == "low" for a in active),
            "alerts_high": sum(a["confidence"] == "high" for a in active),
            "alerts_rejected": sum(a["confidence"] == "rejected" for a in active),
            "area_low_ha": round(sum(a["area_ha"] for a in active if a["confidence"] == "low"), 6),
            "area_high_ha": round(sum(a["area_ha"] for a in active if a["confidence"] == "high"), 6),
            "late": int(late)}


def write_changes_geojson(path: Path, alerts: list[dict], grid: Grid) -> None:
    """RFC 7946 FeatureCollection in WGS84 (lon/lat, counter-clockwise exterior rings)."""
    import shapely
    import shapely.affinity
    from pyproj import Transformer
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    t = Transformer.from_crs(grid.crs_wkt, "EPSG:4326", always_xy=True)
    feats = []
    for a in alerts:
        g = _reproject(a["geometry"], t)
        g = shapely.set_precision(g, 1e-7)  # (may reorient rings: orient afterwards)
        g = shapely.MultiPolygon([orient(p, 1.0) for p in getattr(g, "geoms", [g])])
        props = {k: a[k] for k in ALERT_FIELDS}
        feats.append({"type": "Feature", "id": a["alert_id"], "geometry": mapping(g), "properties": props})
    doc = {"type": "FeatureCollection", "features": feats}
    tmp = _atomic_tmp(path)
    try:
        tmp.write_text(json.dumps(doc, default=_json_default))
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


# -- crash hook -----------------------------------------------------------------------------------------

_crash_counts: dict[str, int] = {}


def _crash_point(step: str) -> None:
    """Test hook: ``GEOSEG_MONITOR_CRASH_AFTER=step[:n]`` kills the process after the n-th ``step``."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != step:
        return
    _crash_counts[step] = _crash_counts.get(step, 0) + 1
    if _crash_counts[step] == int(n or 1):
        os._exit(86)


# -- the run ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path, wait: bool) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise MonitorLockedError(
                f"another geoseg monitor run holds {path}; it will pick up new scenes too, or "
                "rerun later or with --wait") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def aoi_lock(folder: Path, wait: bool) -> Iterator[None]:
    """The AOI folder's lock: one run at a time works on an AOI."""
    return _file_lock(folder / ".lock", wait)


#: Guards OUT/catalog.json and OUT/report.html: runs on different AOIs rewrite them one at a time.
INDEX_LOCK = ".index.lock"


def _obs_name(scene: Scene) -> str:
    return f"{scene.date.strftime('%Y%m%d')}_{hashlib.sha1(scene.id.encode()).hexdigest()[:12]}.tif"


def _read_obs(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def _scene_overlaps(aoi: AOI, scene: Scene) -> bool:
    import rasterio
    from shapely.geometry import box

    if not os.path.exists(scene.path):
        raise InputFileError(f"scene {scene.path} does not exist; fix the inventory")
    try:
        with rasterio.open(scene.path) as src:
            if src.crs is None:
                raise InputError(f"scene {scene.path} has no CRS; monitoring needs georeferenced scenes")
            return _aoi_in(aoi, src.crs).intersects(box(*src.bounds))
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"cannot open scene {scene.path} as a raster ({e})") from None


def _obs_to_masks(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return obs == 1, obs != OBS_NODATA


def run_aoi(cfg: MonitorConfig, aoi: AOI, run_id: str, wait: bool = False) -> dict:
    folder = cfg.output / aoi.id
    with aoi_lock(folder, wait):
        return _run_aoi_locked(cfg, aoi, run_id, folder)


def _remove_stale_temporaries(*folders: Path) -> None:
    """Temporaries of a run killed mid-write (we hold the lock, so none is in use)."""
    for d in folders:
        for p in d.glob(".*.tmp*"):
            with contextlib.suppress(OSError):
                p.unlink()


def _run_aoi_locked(cfg: MonitorConfig, aoi: AOI, run_id: str, folder: Path) -> dict:
    obs_dir = folder / "observations"
    obs_dir.mkdir(exist_ok=True)
    _remove_stale_temporaries(folder, obs_dir)
    state_path, gpkg, gfw = folder / "state.tif", folder / "alerts.gpkg", folder / "alerts_gfw.tif"
    con = open_ledger(folder / "ledger.sqlite")
    try:
        committed: Committed | None = None
        grid: Grid | None = None
        if state_path.exists():
            grid, committed = read_state(state_path)
            fp = fingerprint(cfg, aoi)
            if committed.fingerprint != fp:
                raise ConfigError(
                    f"the state in {folder} was built with another config ({committed.fingerprint}; now {fp}): "
                    "rules, forest classes, kind, model or the AOI changed. Use a new output folder, or delete "
                    f"{folder} to rebuild it from the scenes")
            # reconcile: a crash between the state rename and the ledger write
            done = {r[0] for r in con.execute("SELECT scene_id FROM scenes WHERE aoi_id=? AND status='done'",
                                              (aoi.id,))}
            by_id = {s.id: s for s in cfg.scenes}
            missing = [sid for sid in committed.applied if sid not in done]
            if missing:
                con.execute("BEGIN IMMEDIATE")
                for sid in missing:
                    s = by_id.get(sid)
                    pending_run = con.execute("SELECT run_id FROM runs WHERE aoi_id=? AND finished IS NULL "
                                              "ORDER BY rowid DESC LIMIT 1", (aoi.id,)).fetchone()
                    con.execute("INSERT OR REPLACE INTO scenes VALUES (?,?,?,?,?,?,?,?,?,?)",
                                (sid, aoi.id, s.date.isoformat() if s else "", s.path if s else "",
                                 cfg.model_id, pending_run[0] if pending_run else run_id, "done",
                                 int(sid in committed.late),
                                 _obs_name(s) if s else None, _now()))
                con.execute("COMMIT")
        done = {r[0] for r in con.execute("SELECT scene_id FROM scenes WHERE aoi_id=? AND status IN "
                                          "('done', 'no_overlap')", (aoi.id,))}
        pending = sorted((s for s in cfg.scenes if s.id not in done), key=lambda s: s.key)
        unfinished = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE aoi_id=? AND finished IS NULL",
                                                (aoi.id,))]
        result = {"aoi_id": aoi.id, "scenes_processed": [], "late_scenes": [], "skipped_no_overlap": [],
                  "alerts_new": 0, "alerts_updated": 0}
        if not pending and not unfinished:
            result.update(_totals(gpkg), status="nothing new", changes_file=None)
            return result

        # the run's record: changes are everything stamped by this run or an unfinished (crashed) one
        last_fin = con.execute("SELECT last_date FROM runs WHERE aoi_id=? AND finished IS NOT NULL "
                               "ORDER BY rowid DESC LIMIT 1", (aoi.id,)).fetchone()
        since = last_fin[0] if last_fin and last_fin[0] else None
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO runs (run_id, aoi_id, started, status, since) VALUES (?,?,?,?,?)",
                    (run_id, aoi.id, _now(), "running", since))
        con.execute("COMMIT")

        inside = None
        for scene in pending:
            if not _scene_overlaps(aoi, scene):
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT OR REPLACE INTO scenes VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (scene.id, aoi.id, scene.date.isoformat(), scene.path, cfg.model_id, run_id,
                             "no_overlap", 0, None, _now()))
                con.execute("COMMIT")
                result["skipped_no_overlap"].append(scene.id)
                continue
            if grid is None:
                grid = grid_for(aoi, scene.path)
            if committed is None:
                committed = Committed(ms.initial_state((grid.height, grid.width)), [], None, fingerprint(cfg, aoi))
            if inside is None:
                inside = aoi_mask(aoi, grid)
            obs = observe(cfg, aoi, grid, scene, folder)
            obs_path = obs_dir / _obs_name(scene)
            _write_tif(obs_path, obs[None], grid, "uint8", nodata=OBS_NODATA,
                       descriptions=("forest observation: 1 forest, 0 not forest, 255 not observed",),
                       tags={"GEOSEG_SCENE_ID": scene.id, "GEOSEG_DATE": scene.date.isoformat()})
            _crash_point("observation")

            late = committed.last_key is not None and scene.key < tuple(committed.last_key)
            if late:
                by_id = {s.id: s for s in cfg.scenes}
                seq = sorted([by_id[sid] for sid in committed.applied if sid in by_id] + [scene], key=lambda s: s.key)
                missing = [sid for sid in committed.applied if sid not in by_id]
                if missing:
                    raise InputError(f"late scene {scene.id} needs a replay, but applied scenes {missing} are no "
                                     "longer in the inventory; restore them")
                state = ms.initial_state((grid.height, grid.width))
                for s in seq:
                    o = obs if s.id == scene.id else _read_obs(obs_dir / _obs_name(s))
                    f, v = _obs_to_masks(o)
                    state = ms.update(state, s.date, f, v, cfg.rules).state
                applied = [s.id for s in seq]
                last_key = committed.last_key
                result["late_scenes"].append(scene.id)
            else:
                f, v = _obs_to_masks(obs)
                state = ms.update(committed.state, scene.date, f, v, cfg.rules).state
                applied = committed.applied + [scene.id]
                last_key = scene.key

            # outputs first (temp + rename), then the state (the commit), then the ledger
            now = _now()
            prev_alerts, prev_summary = _read_alerts(gpkg)
            alerts, n_new, n_upd = merge_alerts(prev_alerts, derive_alerts(aoi.id, state, grid, cfg.min_area_ha),
                                                cfg.model_id,
                                                run_id, now)
            summary = [r for r in prev_summary if r["scene_id"] != scene.id]
            summary.append(_summary_row(aoi.id, scene, run_id, obs, inside, alerts, late))
            summary.sort(key=lambda r: (r["date"], r["scene_id"]))
            _write_gpkg(gpkg, alerts, summary, grid)
            _write_tif(gfw, ms.gfw_encode(state)[None], grid, "uint16", nodata=0,
                       descriptions=("GFW date-confidence: conf*10000 + days since 2014-12-31",),
                       tags={"GEOSEG_PRODUCT": "alerts_gfw"}, cog=True)
            if not gfw.with_suffix(".qml").exists():
                from geoseg.delivery.style import write_gfw_qml

                write_gfw_qml(gfw)  # a static style: written once
            _crash_point("outputs")
            committed = Committed(state, applied, last_key, committed.fingerprint,
                                  committed.late + ((scene.id,) if late else ()))
            write_state(state_path, grid, committed)
            _crash_point("state")
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT OR REPLACE INTO scenes VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (scene.id, aoi.id, scene.date.isoformat(), scene.path, cfg.model_id, run_id, "done",
                         int(late), obs_path.name, _now()))
            con.execute("COMMIT")
            _crash_point("ledger")
            result["scenes_processed"].append(scene.id)
            result["alerts_new"] += n_new
            result["alerts_updated"] += n_upd

        # delivery: alerts stamped by this run or by unfinished (crashed) earlier runs
        runs = set(unfinished) | {run_id}
        alerts, _ = _read_alerts(gpkg)
        changed = [a for a in alerts if a["run_id"] in runs]
        changes_file = None
        if committed is not None and grid is not None:
            tag = since.replace("-", "") if since else "start"
            changes_file = folder / f"changes_since_{tag}.geojson"
            write_changes_geojson(changes_file, changed, grid)
            from geoseg.delivery.report import write_monitor_report

            # report.html (alerts, area by confidence), then item.json: last, it records the others' checksums
            write_monitor_report(folder, aoi_id=aoi.id, run_id=run_id, pending=(ITEM_NAME,))
            _write_item(folder, aoi.id, run_id)
        _crash_point("changes")
        last_date = ms.from_days(committed.state.last_date).isoformat() if committed and \
            committed.state.last_date != ms.NONE else None
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE runs SET finished=?, status='finished', last_date=?, scenes=? WHERE run_id=?",
                    (_now(), last_date, len(result["scenes_processed"]), run_id))
        con.execute("UPDATE runs SET finished=?, status='superseded', last_date=? WHERE aoi_id=? AND "
                    "finished IS NULL", (_now(), last_date, aoi.id))
        con.execute("COMMIT")
        result.update(_totals(gpkg), status="ok" if result["scenes_processed"] else "nothing new",
                      changes_file=str(changes_file) if changes_file else None, alerts_changed=len(changed))
        return result
    finally:
        con.close()


def _totals(gpkg: Path) -> dict:
    alerts, _ = _read_alerts(gpkg)
    active = [a for a in alerts if a["status"] in ("confirmed", "unconfirmed")]
    return {"alerts_total": len(active), "alerts_high": sum(a["confidence"] == "high" for a in active),
            "alerts_low": sum(a["confidence"] == "low" for a in active),
            "alert_area_ha": round(sum(float(a["area_ha"]) for a in active), 4)}


def _index_stale(cfg: MonitorConfig) -> bool:
    """``OUT/report.html`` is missing or older than an AOI's ``item.json`` (a run killed before its index)."""
    index = cfg.output / INDEX_NAME
    if not index.exists():
        return True
    t = index.stat().st_mtime_ns
    return any(p.stat().st_mtime_ns > t for a in cfg.aois if (p := cfg.output / a.id / ITEM_NAME).exists())


def _write_index(cfg: MonitorConfig, run_id: str) -> None:
    """``OUT/catalog.json`` (STAC Catalog of the AOI items), then ``OUT/report.html`` (every AOI's alerts and
    area by confidence, linking the AOI reports): rewritten when a run delivered something (or is missing)."""
    from geoseg.delivery.report import monitor_index_html
    from geoseg.delivery.stac import CATALOG_NAME, dumps, monitor_catalog

    # Under the index lock, each writer reads the AOI items as they are when it writes, so the last
    # index written includes every AOI run that finished before it (each such run writes one after).
    with _file_lock(cfg.output / INDEX_LOCK, wait=True):
        for p in cfg.output.glob(".*.tmp*"):  # a killed run's temporaries (we hold the lock)
            with contextlib.suppress(OSError):
                p.unlink()
        ids = [a.id for a in cfg.aois]
        _write_text(cfg.output / CATALOG_NAME, dumps(monitor_catalog(cfg.output, ids)))
        _write_text(cfg.output / INDEX_NAME, monitor_index_html(cfg.output, ids, run_id=run_id))


def run_monitor(config: str | os.PathLike | MonitorConfig, *, wait: bool = False, aoi_ids: Sequence[str] | None = None
                ) -> dict:
    """Run the job once; returns the summary (``status``: ``ok``, ``nothing new`` or ``locked``)."""
    t0 = time.perf_counter()
    cfg = config if isinstance(config, MonitorConfig) else load_config(config)
    try:
        cfg.output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder {cfg.output} ({e.strerror}); fix 'output'") from None
    aois = cfg.aois
    if aoi_ids:
        unknown = set(aoi_ids) - {a.id for a in aois}
        if unknown:
            raise ParameterError(f"unknown AOI id(s) {', '.join(sorted(unknown))}; ids: "
                                 f"{', '.join(a.id for a in aois)}")
        aois = [a for a in aois if a.id in set(aoi_ids)]
    run_id = f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    results, locked = [], []
    for aoi in aois:
        try:
            results.append(run_aoi(cfg, aoi, run_id, wait=wait))
        except MonitorLockedError as e:
            locked.append(aoi.id)
            results.append({"aoi_id": aoi.id, "status": "locked", "message": str(e)})
    if any(r.get("changes_file") for r in results) or _index_stale(cfg):
        _write_index(cfg, run_id)
    processed = len({sid for r in results for sid in r.get("scenes_processed", [])})
    pairs = sum(len(r.get("scenes_processed", [])) for r in results)
    status = "locked" if locked else ("ok" if processed else "nothing new")
    return {
        "status": status,
        "message": "nothing new" if status == "nothing new" else (
            f"locked by another run: {', '.join(locked)}" if locked else f"{processed} scene(s) processed"),
        "run_id": run_id,
        "config": str(cfg.path),
        "scenes_in_inventory": len(cfg.scenes),
        "scenes_processed": processed,  # distinct scenes applied to at least one AOI
        "aoi_scenes_processed": pairs,  # (AOI, scene) pairs
        "late_scenes": sum(len(r.get("late_scenes", [])) for r in results),
        "alerts_new": sum(r.get("alerts_new", 0) for r in results),
        "alerts_updated": sum(r.get("alerts_updated", 0) for r in results),
        "alert_area_ha": round(sum(r.get("alert_area_ha", 0.0) for r in results), 4),
        "locked_aois": locked,
        "aois": results,
        "seconds": round(time.perf_counter() - t0, 3),
    }
