"""Training: ``geoseg train CONFIG.yaml`` and its Python API :func:`train`.

Importing this package imports torch (through :mod:`.loop`) only when
:func:`train` is first used.
"""

from __future__ import annotations

from typing import Any

from geoseg.training.config import TrainConfig, build_config

__all__ = ["TrainConfig", "build_config", "train", "TrainResult"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from geoseg.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'geoseg.training' has no attribute {name!r}")
