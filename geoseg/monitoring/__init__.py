"""Scheduled forest-loss monitoring over areas of interest: :func:`run_monitor` (``api``) and the per-pixel
alert state machine (``state``)."""

from geoseg.monitoring.api import run_monitor

__all__ = ["run_monitor"]
