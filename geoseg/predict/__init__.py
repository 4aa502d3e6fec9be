"""Prediction of one scene: :func:`predict_scene` (``api``), overlap blending (``blend``), the task bodies
(``tasks``) and the dask graph (``graph``)."""

from typing import Any

from geoseg.predict.api import PredictResult, predict_scene

__all__ = ["predict_scene", "PredictResult"]


def __getattr__(name: str) -> Any:
    """Names the flat ``geoseg.predict`` module of 0.1 had: forwarded from ``geoseg.predict.api`` with a warning."""
    from geoseg._compat import forward_moved_name

    return forward_moved_name("geoseg.predict", "geoseg.predict.api", name)
