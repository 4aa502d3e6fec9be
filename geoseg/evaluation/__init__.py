"""Accuracy against a reference: :func:`evaluate_rasters`, :func:`evaluate_model` (``api``) and the
metrics (``metrics``, pure numpy)."""

from geoseg.evaluation.api import Evaluation, evaluate_model, evaluate_rasters

__all__ = ["evaluate_rasters", "evaluate_model", "Evaluation"]
