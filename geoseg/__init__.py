"""geoseg: tiled land-cover segmentation of large georeferenced scenes.

``import geoseg`` is light; torch and dask load on first use of
:func:`predict_scene`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["predict_scene", "PredictResult", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("predict_scene", "PredictResult"):
        from . import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
