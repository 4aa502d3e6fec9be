"""Old import paths (geoseg <= 0.1, flat modules) keep working for one release, with a DeprecationWarning.

``import geoseg.vectorize`` gives a module that forwards every attribute to :mod:`geoseg.vector.api`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

#: old module -> new module
MOVED: dict[str, str] = {
    "geoseg.grid": "geoseg.io.grid",
    "geoseg.raster": "geoseg.io.raster",
    "geoseg.output": "geoseg.io.output",
    "geoseg.progress": "geoseg._util.progress",
    "geoseg.blend": "geoseg.predict.blend",
    "geoseg.tasks": "geoseg.predict.tasks",
    "geoseg.graph": "geoseg.predict.graph",
    "geoseg.schemes": "geoseg.model.schemes",
    "geoseg.vectorize": "geoseg.vector.api",
    "geoseg.vector_tasks": "geoseg.vector.tasks",
    "geoseg.vector_graph": "geoseg.vector.components",
    "geoseg.vector_write": "geoseg.vector.write",
    "geoseg.pixel_union": "geoseg.vector.pixel_union",
    "geoseg.metrics": "geoseg.evaluation.metrics",
    "geoseg.evaluate": "geoseg.evaluation.api",
    "geoseg.monitor": "geoseg.monitoring.api",
    "geoseg.monitor_state": "geoseg.monitoring.state",
    "geoseg.style": "geoseg.delivery.style",
    "geoseg.rat": "geoseg.delivery.rat",
    "geoseg.quicklook": "geoseg.delivery.quicklook",
    "geoseg.stac": "geoseg.delivery.stac",
    "geoseg.cog_check": "geoseg.delivery.cog_check",
    "geoseg.report": "geoseg.delivery.report",
}


def forward_moved_name(old: str, new: str, name: str) -> Any:
    """``old.name`` for a name that moved to module ``new`` (a package that was a module in 0.1)."""
    if name.startswith("__"):
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    target = importlib.import_module(new)
    if not hasattr(target, name):
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    warnings.warn(f"{old}.{name} is deprecated; import it from {new} instead", DeprecationWarning, stacklevel=3)
    return getattr(target, name)


class _Forward(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(f"{module.__name__} is deprecated; import from {self.new} (or the geoseg package) instead",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(self.new)

        def forward(name: str) -> Any:
            return getattr(target, name)

        setattr(module, "__getattr__", forward)  # noqa: B010  (PEP 562 hooks on a module object)
        setattr(module, "__dir__", lambda: dir(target))  # noqa: B010
        setattr(module, "__all__", list(getattr(target, "__all__", ())))  # noqa: B010


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return importlib.machinery.ModuleSpec(fullname, _Forward(new)) if new else None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
