"""geoseg: tiled land-cover segmentation of large georeferenced scenes.

The public API is what ``__all__`` lists; everything else is reached through the subpackages
(``geoseg.io``, ``geoseg.model``, ``geoseg.predict``, ...; docs/design.md has the map).
``import geoseg`` is light: torch and dask load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from geoseg import _compat
from geoseg._version import __version__
from geoseg.errors import GeosegError

_compat.install()

#: public name -> the module that defines it (imported on first use)
_API: dict[str, str] = {
    "predict_scene": "geoseg.predict.api",
    "PredictResult": "geoseg.predict.api",
    "predict_xarray": "geoseg.predict.arrays",
    "vectorize_raster": "geoseg.vector.api",
    "VectorizeResult": "geoseg.vector.api",
    "mosaic_scenes": "geoseg.mosaic.api",
    "MosaicResult": "geoseg.mosaic.api",
    "detect_change": "geoseg.change.api",
    "ChangeResult": "geoseg.change.api",
    "evaluate_rasters": "geoseg.evaluation.api",
    "evaluate_model": "geoseg.evaluation.api",
    "Evaluation": "geoseg.evaluation.api",
    "run_monitor": "geoseg.monitoring.api",
    "train": "geoseg.training.loop",
    "TrainResult": "geoseg.training.loop",
}

__all__ = sorted(_API) + ["GeosegError", "__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
