"""Forest loss/gain between two dates: :func:`detect_change` (``api``)."""

from geoseg.change.api import ChangeResult, detect_change

__all__ = ["detect_change", "ChangeResult"]
