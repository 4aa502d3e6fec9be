"""Polygons from class rasters: :func:`vectorize_raster` (``api``, the run), its options (``options``), the input
raster (``source``), the area model (``area``), the block tasks (``tasks``), the pixel-geometry helpers
(``geometry``), the staging files (``staging``), the seam merge (``merge``), connected components, union-find and
the sieve plan (``components``, pure numpy), the ring-relinking union (``pixel_union``), the writer (``write``),
the worker processes (``workers``) and the per-class summary (``summary``)."""

from geoseg.vector.api import VectorizeResult, vectorize_raster

__all__ = ["vectorize_raster", "VectorizeResult"]
