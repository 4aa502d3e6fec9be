"""Polygons from class rasters: :func:`vectorize_raster` (``api``), block tasks and the seam merge (``tasks``),
connected components, union-find and the sieve plan (``components``, pure numpy), the ring-relinking union
(``pixel_union``) and the writer (``write``)."""

from geoseg.vector.api import VectorizeResult, vectorize_raster

__all__ = ["vectorize_raster", "VectorizeResult"]
