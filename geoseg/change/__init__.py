"""Forest loss/gain between two dates: :func:`detect_change` (``api``)."""

from typing import Any

from geoseg.change.api import ChangeResult, detect_change

__all__ = ["detect_change", "ChangeResult"]


def __getattr__(name: str) -> Any:
    """Names the flat ``geoseg.change`` module of 0.1 had: forwarded from ``geoseg.change.api`` with a warning."""
    from geoseg._compat import forward_moved_name

    return forward_moved_name("geoseg.change", "geoseg.change.api", name)
