"""Measuring in metres for vectorize: the area model of a class raster (:mod:`geoseg.io.area`: its own
scale where the CRS is equal-area at the scene's scale, else a local equal-area CRS) and its pixel size."""

from __future__ import annotations

from geoseg.io.area import AreaModel
from geoseg.io.area import area_model as grid_area_model
from geoseg.io.raster import ClassRaster

__all__ = ["AreaModel", "area_model", "pixel_size_m"]


def area_model(info: ClassRaster) -> AreaModel:
    """How to measure polygons of ``info`` (georeferenced: see :func:`~geoseg.vector.source.open_vector_source`)."""
    if not info.crs_wkt:
        raise ValueError(f"{info.path} has no CRS")  # open_vector_source refused it already
    return grid_area_model(info.crs_wkt, info.transform, info.width, info.height)


def pixel_size_m(info: ClassRaster, model: AreaModel) -> tuple[float, float]:
    """(pixel area m², pixel side m) at the raster centre (exact for an equal-area projected raster)."""
    return model.pixel_m2(info.transform, info.width, info.height)
