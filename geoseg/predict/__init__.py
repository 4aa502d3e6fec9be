"""Prediction of one scene: :func:`predict_scene` (``api``), overlap blending (``blend``), the task bodies
(``tasks``) and the dask graph (``graph``)."""

from geoseg.predict.api import PredictResult, predict_scene

__all__ = ["predict_scene", "PredictResult"]
