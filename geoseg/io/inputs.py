"""What ``geoseg predict`` (and the commands built on it) accept as a scene, resolved to one readable dataset.

``open_input`` takes what a user has:

* a multiband raster (GeoTIFF, VRT, any GDAL raster): read as it is;
* a product (Sentinel-2 ``.SAFE`` folder or zip, a STAC Item JSON, a Landsat Collection 2 folder): read by
  :mod:`geoseg.io.sources` as one stacked VRT (XML, no file written), its bands named canonically and
  carrying their scale/offset to reflectance;
* explicit band files (``--band B2=b2.tif --band B3=b3.tif ...``): stacked the same way.

It returns the :class:`~geoseg.io.raster.SceneInfo` of that dataset (``info.gdal_name`` is what tasks open;
``info.path`` what messages name) and the :class:`~geoseg.io.sources.SceneSource` when a reader made it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import rasterio
from rasterio.errors import RasterioIOError

from geoseg.errors import InputFileError, MissingBandError, ParameterError, UnreadableBandError
from geoseg.io.clouds import CloudMask, user_cloud_mask
from geoseg.io.raster import GDAL_CACHE_BYTES, SceneInfo, inspect_dataset, open_scene
from geoseg.io.sources import SceneSource, band_order, canonical_band, open_source
from geoseg.io.sources.scene import dataset_tags
from geoseg.io.sources.vrt import BandFile, row_cache_bytes, stack_vrt

__all__ = ["open_input", "read_band_files", "parse_band_option", "source_record", "resolve_cloud_mask",
           "gdal_cache_for"]


def parse_band_option(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``("B2=b2.tif", "nir=b8.tif")`` -> ``{"B2": "b2.tif", "B8": "b8.tif"}`` (canonical names); one-line
    ParameterErrors for a value without ``=``, an unknown band name or a band given twice."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ParameterError(f"--band {value!r} is not NAME=PATH; e.g. --band B2=T49QHE_B02.tif")
        canon = canonical_band(name)
        if canon is None:
            raise ParameterError(f"--band {name.strip()!r} is not a band name geoseg knows; use a Sentinel-2 "
                                 "name (B2, B8A...), a STAC common name (blue, nir08...) or a Landsat SR_B* name")
        if canon in out:
            raise ParameterError(f"--band {canon} is given twice; give each band once")
        out[canon] = path.strip()
    return out


def _band_file(name: str, path: str) -> BandFile:
    if not os.path.isfile(path):
        raise InputFileError(f"--band {name}={path}: no such file; check the path")
    try:
        with rasterio.open(path) as src:
            if src.count != 1:
                raise MissingBandError(f"--band {name}={path} has {src.count} bands; give one single-band file per "
                                       "band (or the multiband file itself as SCENE)")
            scale, offset = src.scales[0], src.offsets[0]
            return BandFile(name, os.path.abspath(path), 1, 1.0 if scale is None else float(scale),
                            0.0 if offset is None else float(offset), src.nodata)
    except RasterioIOError:
        raise UnreadableBandError(f"--band {name}={path} is not a readable raster; give a GeoTIFF (or another "
                                  "GDAL raster) per band") from None


def read_band_files(files: Mapping[str, str]) -> SceneSource:
    """Explicit band files (canonical name -> path) as a :class:`SceneSource` stacked on the finest band's grid,
    each band keeping its file's scale/offset and nodata."""
    names = band_order(list(files))
    band_files = [_band_file(n, files[n]) for n in names]
    origin = "--band " + " ".join(f"{n}={files[n]}" for n in names)
    xml = stack_vrt(band_files, dataset_tags(None, None, None, None, {}), origin)
    return SceneSource(xml, origin, tuple(names))


def open_input(scene: str | os.PathLike | None, *, band_files: Mapping[str, str] | None = None,
               wanted: Sequence[str] | None = None, allow_ungeoreferenced: bool = False
               ) -> tuple[SceneInfo, SceneSource | None]:
    """Resolve ``scene`` (a raster or a product) or ``band_files`` to (SceneInfo, SceneSource or None).

    Exactly one of the two must be given.  ``wanted``: the bands a product is stacked with (the model's, in its
    order; default every band of the product).  Product errors (missing band, damaged file, not a product)
    are one-line errors from :mod:`geoseg.io.sources`.
    """
    if band_files:
        if scene is not None:
            raise ParameterError("give either SCENE or --band NAME=PATH files, not both")
        stacked = read_band_files(band_files)
        return inspect_dataset(stacked.dataset, stacked.origin, allow_ungeoreferenced), stacked
    if scene is None:
        raise ParameterError("no scene: give SCENE (a raster, .SAFE, STAC Item JSON or Landsat folder) or "
                             "--band NAME=PATH for each band")
    path = os.fspath(scene)
    if not os.path.exists(path):
        raise InputFileError(f"input scene {path} does not exist; check the path")
    source = open_source(path, wanted)
    if source is None:
        return open_scene(path, allow_ungeoreferenced), None
    return inspect_dataset(source.dataset, path, allow_ungeoreferenced), source


def source_record(source: SceneSource) -> dict:
    """What ``run.json`` records of a product read: where from, which bands, sensor, level, quantity and the
    product metadata the reader kept (tile, processing baseline, cloud cover...)."""
    return {"origin": source.origin, "bands": list(source.band_names), "sensor": source.sensor,
            "level": source.level, "quantity": source.quantity, "acquired": source.acquired,
            "metadata": dict(source.metadata)}


def resolve_cloud_mask(choice: str | os.PathLike | None, info: SceneInfo, source: SceneSource | None
                       ) -> CloudMask | None:
    """The cloud mask a run honours: ``"auto"`` (default) the product's own mask, if it has one (a product without
    one is said on stderr); ``"none"`` none; anything else a raster path (``--cloud-mask RASTER``, non-zero =
    masked, on the scene's grid or warped onto it)."""
    if choice is None or str(choice).lower() == "none":
        return None
    if str(choice).lower() == "auto":
        if source is None:
            return None
        if source.cloud_mask is None:
            warnings.warn(f"{info.path} carries no cloud mask (no SCL, MSK_CLASSI, MSK_CLOUDS or QA_PIXEL found): "
                          "clouds will be mapped as land cover; pass --cloud-mask RASTER (or, for an L1C, detect) "
                          "to leave them out",
                          UserWarning, stacklevel=3)
        return source.cloud_mask
    return user_cloud_mask(os.fspath(choice), info.crs_wkt, info.transform, info.width, info.height)


#: the most GDAL block cache a product read is given (a 10980-px Sentinel-2 tile needs about 300 MiB)
MAX_CACHE_BYTES = 2**30


def gdal_cache_for(info: SceneInfo) -> int:
    """GDAL's block cache for reading ``info``: the default, or for a product's VRT 1.25 x two rows of its band files'
    blocks (prediction tiles straddle block rows), so that each JPEG 2000 block is decoded once, never above
    :data:`MAX_CACHE_BYTES`.  A ``GDAL_CACHEMAX`` in the environment still wins."""
    if info.dataset is None:
        return GDAL_CACHE_BYTES
    return int(min(MAX_CACHE_BYTES, max(GDAL_CACHE_BYTES, 2.5 * row_cache_bytes(info.dataset))))
