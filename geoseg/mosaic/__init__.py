"""Mosaics of per-scene predictions: :func:`mosaic_scenes` (``api``), the inputs checked before any work
(``inputs``), the output grid (``grid``), the overlap rules (``rules``, pure numpy) and the block task
(``tasks``)."""

from geoseg.mosaic.api import MosaicResult, mosaic_scenes

__all__ = ["mosaic_scenes", "MosaicResult"]
