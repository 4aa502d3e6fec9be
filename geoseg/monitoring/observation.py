"""Observing a scene over an AOI: the AOI grid (the scene's pixel lattice over the AOI), the AOI mask, and
one scene's observation on that grid (``observations/<key>.tif``: uint8 1 forest, 0 not forest, 255 not
observed), from a class raster (``kind: landcover``) or by predicting the AOI crop of an image (``kind: scene``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ConfigError, EmptySceneError, InputError, InputFileError, ParameterError
from geoseg.io.clouds import CloudMask
from geoseg.io.grid import BlockGrid, Window
from geoseg.io.warp import Grid, read_on_grid, same_lattice, sub_grid, to_crs
from geoseg.monitoring.config import AOI, MonitorConfig, Scene
from geoseg.monitoring.rasters import TifBlocks, write_tif

__all__ = ["OBS_NODATA", "grid_for", "aoi_mask", "observe", "observation_name", "read_observation",
           "write_observation", "observe_blocks", "scene_overlaps", "observation_masks"]

OBS_NODATA = 255


def aoi_in(aoi: AOI, crs: Any) -> Any:
    """The AOI's geometry in ``crs``."""
    return to_crs(aoi.geometry, aoi.crs, crs)


def scene_dataset(cfg: MonitorConfig, path: str) -> str:
    """What GDAL opens for the inventory's scene ``path``: the file itself, or a product's stacked VRT
    (a Sentinel-2 SAFE, STAC Item or Landsat folder, :func:`geoseg.io.inputs.open_input`) of the model's
    bands."""
    bands: tuple[str, ...] | None = None
    if cfg.kind == "scene" and cfg.model:
        from geoseg.model.package import read_card, resolve

        bands = tuple(read_card(resolve(str(cfg.model))).bands)
    return _dataset(path, bands)[0]


def scene_cloud_mask(cfg: MonitorConfig, path: str) -> CloudMask | None:
    """The product's own cloud mask of the inventory's scene ``path`` (None for a plain raster)."""
    if cfg.kind != "scene":
        return None
    from geoseg.model.package import read_card, resolve

    return _dataset(path, tuple(read_card(resolve(str(cfg.model))).bands) if cfg.model else None)[1]


@functools.lru_cache(maxsize=64)
def _dataset(path: str, bands: tuple[str, ...] | None) -> tuple[str, CloudMask | None]:
    from geoseg.io.inputs import open_input
    from geoseg.io.sources import canonical_band

    if not os.path.exists(path):
        raise InputFileError(f"scene {path} does not exist; fix the inventory")
    wanted = bands if bands and all(canonical_band(b) for b in bands) else None
    info, source = open_input(path, wanted=wanted, allow_ungeoreferenced=True)
    return info.gdal_name, None if source is None else source.cloud_mask


def grid_for(cfg: MonitorConfig, aoi: AOI, scene_path: str) -> Grid:
    """The AOI grid: the scene's pixel lattice over the AOI's bounds (rounded outwards)."""
    import rasterio

    with rasterio.open(scene_dataset(cfg, scene_path)) as src:
        if src.crs is None:
            raise InputError(f"{scene_path} has no CRS; monitoring needs georeferenced scenes")
        geom = aoi_in(aoi, src.crs)
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


def aoi_mask(aoi: AOI, grid: Grid) -> np.ndarray:
    from rasterio.crs import CRS
    from rasterio.features import rasterize

    geom = aoi_in(aoi, CRS.from_wkt(grid.crs_wkt))
    return rasterize([(geom, 1)], out_shape=(grid.height, grid.width), transform=grid.affine, fill=0,
                     dtype="uint8").astype(bool)


def scene_overlaps(cfg: MonitorConfig, aoi: AOI, scene: Scene) -> bool:
    import rasterio
    from shapely.geometry import box

    try:
        with rasterio.open(scene_dataset(cfg, scene.path)) as src:
            if src.crs is None:
                raise InputError(f"scene {scene.path} has no CRS; monitoring needs georeferenced scenes")
            return aoi_in(aoi, src.crs).intersects(box(*src.bounds))
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"cannot open scene {scene.path} as a raster ({e})") from None


def _forest_values(cfg: MonitorConfig, names: dict[int, str], path: str) -> tuple[int, ...]:
    from geoseg.change.classify import resolve_forest_values

    try:
        return resolve_forest_values(cfg.forest, names, path)
    except ParameterError as e:  # a config value, not a command-line option: bad input (exit 3)
        raise ConfigError(str(e).replace("--forest", "'forest' in the config")) from None


def _observation(cfg: MonitorConfig, classes: np.ndarray, valid: np.ndarray, names: dict[int, str],
                 path: str) -> np.ndarray:
    """uint8 1 forest, 0 not forest, 255 not observed (the forest classes resolved only where observed)."""
    if not valid.any():
        return np.full(valid.shape, OBS_NODATA, np.uint8)
    fv = _forest_values(cfg, names, path)
    forest = np.isin(classes, fv)
    return np.where(valid, forest.astype(np.uint8), OBS_NODATA).astype(np.uint8)


def _observe_landcover(cfg: MonitorConfig, aoi: AOI, grid: Grid, scene: Scene, w: Window) -> np.ndarray:
    from geoseg.io.raster import class_names_from_tags

    data, nodata, meta, covered = read_on_grid(scene.path, grid, [cfg.band], window=w)
    classes = data[0]
    valid = covered if nodata is None else (classes != nodata) & covered
    valid = valid & aoi_mask(aoi, sub_grid(grid, w))
    return _observation(cfg, classes, valid, class_names_from_tags(meta["tags"], meta["band_tags"]), scene.path)


def observe(cfg: MonitorConfig, aoi: AOI, grid: Grid, scene: Scene, work: Path) -> np.ndarray:
    """One scene's whole observation on the AOI grid: uint8 1 forest, 0 not forest, 255 not observed."""
    whole = Window(0, 0, grid.height, grid.width)
    if cfg.kind == "landcover":
        return _observe_landcover(cfg, aoi, grid, scene, whole)
    blocks = BlockGrid(grid.height, grid.width, max(grid.height, grid.width))
    with _predicted_crop(cfg, grid, scene, work, blocks) as read:
        return _observe_predicted(cfg, aoi, grid, read, whole)


def _observe_predicted(cfg: MonitorConfig, aoi: AOI, grid: Grid, read: Callable | None, w: Window) -> np.ndarray:
    if read is None:  # the scene has no valid pixel over this AOI: observed nowhere
        return np.full((w.height, w.width), OBS_NODATA, np.uint8)
    classes, valid, names, path = read(w)
    return _observation(cfg, classes, valid & aoi_mask(aoi, sub_grid(grid, w)), names, path)


def observe_blocks(path: Path, cfg: MonitorConfig, aoi: AOI, grid: Grid, scene: Scene, work: Path,
                   blocks: BlockGrid) -> tuple[int, int]:
    """Observe ``scene`` block by block (``kind: scene``: its AOI crop is written block by block, predicted,
    and the prediction read block by block) and write the observation raster at ``path`` (temp + rename);
    returns (observed pixels, AOI pixels)."""
    n_observed = n_inside = 0
    with contextlib.ExitStack() as stack:
        read = None
        if cfg.kind != "landcover":
            read = stack.enter_context(_predicted_crop(cfg, grid, scene, work, blocks))
        out = stack.enter_context(TifBlocks(path, grid, 1, "uint8", nodata=OBS_NODATA,
                                            descriptions=(_OBS_DESCRIPTION,), tags=_obs_tags(scene)))
        for w in blocks.windows():
            if cfg.kind == "landcover":
                obs = _observe_landcover(cfg, aoi, grid, scene, w)
            else:
                obs = _observe_predicted(cfg, aoi, grid, read, w)
            n_observed += int(np.count_nonzero(obs != OBS_NODATA))
            n_inside += int(np.count_nonzero(aoi_mask(aoi, sub_grid(grid, w))))
            out.write(w, obs[None])
        out.publish()
    return n_observed, n_inside


def _crop_profile(grid: Grid, count: int, dtype: str, nodata: float | None) -> dict[str, Any]:
    from rasterio.crs import CRS

    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": count, "dtype": dtype,
               "crs": CRS.from_wkt(grid.crs_wkt), "transform": grid.affine, "compress": "deflate", "tiled": True,
               "blockxsize": 256, "blockysize": 256, "bigtiff": "if_safer"}
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def _write_crop(crop: Path, covered_path: Path, name: str, mask: CloudMask | None, grid: Grid,
                blocks: BlockGrid) -> None:
    """Scratch GeoTIFFs (removed with their folder) of the AOI crop, block by block: the model's input, with the
    scene's band names, scale/offset and dataset tags (product level, sensor, time), so that predict converts
    it alike; and where the crop covers the scene outside its clouds (uint8)."""
    import rasterio

    with contextlib.ExitStack() as stack:
        dst: Any = None
        cov: Any = None
        meta: dict[str, Any] = {}
        for w in blocks.windows():
            data, nodata, meta, covered = read_on_grid(name, grid, resampling="nearest", window=w)
            if mask is not None:  # the product's clouds: nodata in the crop, so unobserved, never "no change"
                masked = _masked_on_grid(name, mask, grid, w)
                data[:, masked] = nodata if nodata is not None else 0
                covered = covered & ~masked
            if dst is None:
                dst = stack.enter_context(rasterio.open(crop, "w", **_crop_profile(grid, data.shape[0],
                                                                                   data.dtype.name, nodata)))
                cov = stack.enter_context(rasterio.open(covered_path, "w", **_crop_profile(grid, 1, "uint8", None)))
            rw = rasterio.windows.Window(w.col_off, w.row_off, w.width, w.height)
            dst.write(data, window=rw)
            cov.write(covered.astype(np.uint8)[None], window=rw)
        if any(meta["descriptions"]):
            dst.descriptions = tuple(d or "" for d in meta["descriptions"])
        if any(s not in (None, 1.0) for s in meta["scales"]) or any(o not in (None, 0.0) for o in meta["offsets"]):
            dst.scales = tuple(1.0 if s is None else s for s in meta["scales"])
            dst.offsets = tuple(0.0 if o is None else o for o in meta["offsets"])
        dst.update_tags(**meta["tags"])


def _masked_on_grid(name: str, mask: CloudMask, grid: Grid, w: Window) -> np.ndarray:
    """The cloud mask over the window ``w`` of the AOI grid (a window of the scene's own lattice)."""
    import rasterio

    from geoseg.io.clouds import read_cloud_mask

    with rasterio.open(name) as src:
        win = same_lattice(src, grid)
    if win is None:  # pragma: no cover - grid_for made the grid from this scene's lattice
        raise InputError(f"the AOI grid is not on the lattice of {name[:80]}; report this")
    return read_cloud_mask(mask, Window(int(win.row_off) + w.row_off, int(win.col_off) + w.col_off, w.height,
                                        w.width))


@contextlib.contextmanager
def _predicted_crop(cfg: MonitorConfig, grid: Grid, scene: Scene, work: Path, blocks: BlockGrid
                    ) -> Iterator[Callable[[Window], tuple[np.ndarray, np.ndarray, dict[int, str], str]] | None]:
    """Crop the scene to the AOI grid (block by block, into a temporary GeoTIFF) and predict that crop only;
    yields a reader of (classes, valid, class names, what produced them) per window of the AOI grid, or None
    when the crop has no valid pixel."""
    import rasterio

    from geoseg.io.raster import class_names_from_tags
    from geoseg.predict.api import predict_scene

    name = scene_dataset(cfg, scene.path)
    with tempfile.TemporaryDirectory(dir=work, prefix=".predict-") as tmp:
        crop, covered = Path(tmp) / "crop.tif", Path(tmp) / "covered.tif"
        _write_crop(crop, covered, name, scene_cloud_mask(cfg, scene.path), grid, blocks)
        try:
            res = predict_scene(str(crop), str(cfg.model), str(Path(tmp) / "out"), overwrite=True, progress=False)
        except EmptySceneError:
            res = None
        if res is None:
            yield None
            return
        with rasterio.open(res.landcover) as src, rasterio.open(covered) as cov:
            names = class_names_from_tags(src.tags(), src.tags(1))
            nodata = src.nodata if src.nodata is not None else 255

            def read(w: Window) -> tuple[np.ndarray, np.ndarray, dict[int, str], str]:
                rw = rasterio.windows.Window(w.col_off, w.row_off, w.width, w.height)
                classes = src.read(1, window=rw)
                return classes, (classes != nodata) & (cov.read(1, window=rw) > 0), names, f"model {cfg.model}"

            yield read


def observation_name(scene: Scene) -> str:
    """``observations/<this>``: ``YYYYMMDD_<sha1(scene id)[:12]>.tif``."""
    return f"{scene.date.strftime('%Y%m%d')}_{hashlib.sha1(scene.id.encode()).hexdigest()[:12]}.tif"


_OBS_DESCRIPTION = "forest observation: 1 forest, 0 not forest, 255 not observed"


def _obs_tags(scene: Scene) -> dict[str, str]:
    return {"GEOSEG_SCENE_ID": scene.id, "GEOSEG_DATE": scene.date.isoformat()}


def write_observation(path: Path, obs: np.ndarray, grid: Grid, scene: Scene) -> None:
    """A whole observation array at ``path`` (temp + rename)."""
    write_tif(path, obs[None], grid, "uint8", nodata=OBS_NODATA, descriptions=(_OBS_DESCRIPTION,),
              tags=_obs_tags(scene))


def read_observation(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def observation_masks(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(forest, valid) masks of an observation, as :func:`geoseg.monitoring.state.update` takes them."""
    return obs == 1, obs != OBS_NODATA

