"""The input of ``vectorize_raster``: a class raster inspected (size, georeference, mask, class names and
colours), with a one-line error naming the fix when it cannot be vectorized; and its palette as a layer style."""

from __future__ import annotations

import os

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError

from geoseg.errors import InputFileError, NotAClassRasterError, NotGeoreferencedError, ParameterError
from geoseg.io.raster import ClassRaster, class_names_from_tags


def _class_names(src: rasterio.DatasetReader, band: int) -> dict[int, str]:
    """``CLASS_<value>`` tags (dataset, then band), as written by ``geoseg predict``."""
    return class_names_from_tags(src.tags(), src.tags(band))


def _colors(src: rasterio.DatasetReader, band: int) -> dict[int, str]:
    """The band's colour table as ``{value: "#RRGGBB"}`` (empty without one)."""
    try:
        cmap = src.colormap(band)
    except ValueError:  # no colour table
        return {}
    return {int(v): "#{:02X}{:02X}{:02X}".format(*rgba[:3]) for v, rgba in cmap.items()}


def style_categories(info: ClassRaster, names: dict[int, str], present: np.ndarray,
                      selected: tuple[int, ...] | None) -> list:
    """The polygon layer's style: one category per named or present class (within ``selected``),
    coloured as in the raster's colour table; empty when the raster has none."""
    from geoseg.delivery.style import Category

    values = set(names) | {int(v) for v in present}
    if selected is not None:
        values &= set(selected)
    if not info.colors or not values <= set(info.colors):
        return []
    return [Category(v, names.get(v, f"class_{v}"), info.colors[v]) for v in sorted(values)]


def open_vector_source(path: str | os.PathLike, band: int = 1) -> ClassRaster:
    """Inspect a class raster; one-line InputError naming the fix when it cannot be vectorized."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"input raster {path} does not exist; check the path")
    if os.path.isdir(path):
        raise InputFileError(f"input raster {path} is a directory; give a class GeoTIFF such as landcover.tif")
    try:
        with rasterio.open(path) as src:
            if not 1 <= band <= src.count:
                raise ParameterError(f"--band {band} out of range: {path} has band(s) 1..{src.count}")
            dtype = src.dtypes[band - 1]
            flags = src.mask_flag_enums[band - 1]
            info = ClassRaster(
                path=path,
                band=band,
                width=src.width,
                height=src.height,
                dtype=dtype,
                crs_wkt=src.crs.to_wkt() if src.crs else None,
                transform=tuple(src.transform)[:6],
                nodata=src.nodata,
                masked=MaskFlags.all_valid not in flags,
                class_names=_class_names(src, band),
                colors=_colors(src, band),
            )
    except RasterioIOError:
        raise InputFileError(f"{path} is not a readable raster; give a class GeoTIFF such as landcover.tif") from None
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise NotAClassRasterError(
            f"{path} is {info.dtype}, not an integer class raster; vectorize a class map such as geoseg's "
            "landcover.tif, or convert it first (e.g. gdal_translate -ot Byte)"
        )
    if not info.crs_wkt:
        raise NotGeoreferencedError(
            f"{path} has no CRS; areas and output coordinates need one: set it with "
            "gdal_edit.py -a_srs EPSG:<code> (and -a_ullr if it has no geotransform)"
        )
    if info.transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        raise NotGeoreferencedError(
            f"{path} has no geotransform; set it with gdal_edit.py -a_ullr <ulx> <uly> <lrx> <lry>"
        )
    crs = CRS.from_wkt(info.crs_wkt)
    if not (crs.is_projected or crs.is_geographic):
        raise NotGeoreferencedError(
            f"{path} has a CRS that is neither projected nor geographic; reproject it "
            "(e.g. gdalwarp -t_srs EPSG:<utm code>) so areas can be computed"
        )
    return info
