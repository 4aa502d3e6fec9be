"""Pure per-pixel change classification and what counts as forest (no I/O).

Forest is either a set of class values (given as values, or as names resolved per raster from its
``CLASS_<value>`` tags) or a forest probability at or above a threshold in percent.  The change codes
(:mod:`geoseg.io.codes`) come from the forest masks of both dates and the observed mask.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import InputError, ParameterError
from geoseg.io.codes import GAIN, LOSS, NO_CHANGE, UNOBSERVED

__all__ = ["forest_items", "resolve_forest_values", "classify_change", "forest_threshold", "probability",
           "probability_scale", "ForestRule"]


def forest_items(forest: str | int | Sequence[str | int] | None) -> list[str | int]:
    """``--forest`` (``"trees"``, ``"1,2"``, ``1``, ``["trees", 2]``) -> class names and values, in order."""
    if forest is None:
        forest = "trees"
    if isinstance(forest, (int, np.integer)):
        return [int(forest)]
    items = [s.strip() for s in forest.split(",")] if isinstance(forest, str) else [
        s.strip() if isinstance(s, str) else s for s in forest]
    items = [s for s in items if s != ""]
    if not items:
        raise ParameterError("--forest is empty; give forest class names or values, e.g. --forest trees or 1")
    out: list[str | int] = []
    for s in items:
        if isinstance(s, (int, np.integer)) or (isinstance(s, str) and re.fullmatch(r"-?\d+", s)):
            out.append(int(s))
        else:
            out.append(str(s))
    return out


def resolve_forest_values(items: Sequence[str | int], names: dict[int, str], path: str) -> tuple[int, ...]:
    """Forest class values of one class raster: values as given, names via its ``CLASS_<v>`` tags."""
    by_name = {n.casefold(): v for v, n in names.items()}
    out = set()
    for item in items:
        if isinstance(item, int):
            out.add(item)
        elif item.casefold() in by_name:
            out.add(by_name[item.casefold()])
        elif not names:
            raise ParameterError(
                f"forest class {item!r} cannot be resolved: {path} has no class names (no CLASS_<value> band "
                "tags); give forest class values instead, e.g. --forest 1"
            )
        else:
            known = ", ".join(f"{n} ({v})" for v, n in sorted(names.items()))
            raise ParameterError(
                f"forest class {item!r} is not a class of {path} (classes: {known}); "
                "give a class name or value with --forest, e.g. --forest 1"
            )
    return tuple(sorted(out))


def classify_change(before_forest: np.ndarray, after_forest: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-pixel change codes (uint8) from forest masks of both dates and the observed mask."""
    out = np.full(observed.shape, UNOBSERVED, dtype=np.uint8)
    out[observed] = NO_CHANGE
    out[observed & before_forest & ~after_forest] = LOSS
    out[observed & ~before_forest & after_forest] = GAIN
    return out


# -- forest probability ------------------------------------------------------------------------------


def forest_threshold(threshold: float) -> float:
    """The probability (0..1) at and above which a pixel is forest; values exactly at ``threshold`` percent
    are forest."""
    return threshold / 100.0 - 1e-9


def probability_scale(dtype: str, band_scale: float) -> float:
    """The factor from a probability raster's values to 0..1: its band scale if set, else 1 for floats and
    0.01 for integers (percent, as geoseg writes)."""
    if band_scale != 1.0:
        return band_scale
    return 1.0 if np.issubdtype(np.dtype(dtype), np.floating) else 0.01


def probability(data: np.ndarray, valid: np.ndarray, scale: float, path: str, dtype: str) -> np.ndarray:
    """Values -> probability 0..1 (float64); InputError on valid values outside 0..1."""
    p = data.astype(np.float64) * scale
    v = p[valid]
    if v.size and (v.min() < -1e-6 or v.max() > 1 + 1e-6):
        unit = "0..1" if np.issubdtype(np.dtype(dtype), np.floating) and scale == 1.0 else "0..100 percent"
        raise InputError(
            f"{path} holds values outside {unit} (min {v.min() / scale:g}, max {v.max() / scale:g}); "
            "give forest probabilities (float 0..1, or uint8 percent 0..100 with nodata 255 as geoseg writes)"
        )
    return p


@dataclass(frozen=True)
class ForestRule:
    """Which values of one date's raster are forest, as a callable on an array of them: class ``values``,
    or (``threshold`` percent given) ``value * scale >= threshold``."""

    values: tuple[int, ...] = ()
    threshold: float | None = None
    scale: float = 1.0

    def __call__(self, data: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            return np.isin(data, self.values)
        return data.astype(np.float64) * self.scale >= forest_threshold(self.threshold)
