"""The overlap rules of a mosaic, pure numpy: which input gives each pixel.

Only *observed* pixels compete: a pixel that is nodata (255) in a scene's class map, cloud (254) or nodata in
its confidence, or outside its footprint never beats an observed pixel of another scene.

* ``confidence``: the highest confidence wins; ties go to the earlier input;
* ``first``: the earliest input that observed the pixel;
* ``last``: the latest input that observed the pixel.
"""

from __future__ import annotations

import numpy as np

from geoseg.errors import ParameterError

__all__ = ["RULES", "NODATA", "CLOUD", "check_rule", "observed", "winners", "compose"]

RULES = ("confidence", "first", "last")
NODATA = 255  # geoseg.io.output.NODATA: no valid input
CLOUD = 254  # geoseg.predict.blend.CLOUD: masked as cloud (in confidence.tif)


def check_rule(rule: str, have_confidence: bool, missing: str | None = None) -> str:
    """``rule`` if known and usable; ``confidence`` needs every input's ``confidence.tif`` (``missing``: a
    folder without one)."""
    if rule not in RULES:
        raise ParameterError(f"unknown --rule {rule!r}; choose one of {', '.join(RULES)}")
    if rule == "confidence" and not have_confidence:
        raise ParameterError(f"--rule confidence needs confidence.tif in every input, and {missing} has none; "
                             "re-run geoseg predict with --confidence, or use --rule first or --rule last")
    return rule


def observed(classes: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """(n, h, w) bool: the scene observed the pixel (a class, and a confidence that is not cloud or nodata)."""
    obs = classes != NODATA
    if confidence is not None:
        obs &= confidence <= 100
    return obs


def winners(obs: np.ndarray, confidence: np.ndarray | None, rule: str) -> np.ndarray:
    """(h, w) int: the index of the input that gives each pixel, -1 where none observed it."""
    n = obs.shape[0]
    any_obs = obs.any(axis=0)
    if rule == "confidence":
        assert confidence is not None
        score = np.where(obs, confidence.astype(np.int16), -1)
        idx = np.argmax(score, axis=0)  # the first maximum: ties go to the earlier input
    elif rule == "first":
        idx = np.argmax(obs, axis=0)
    elif rule == "last":
        idx = n - 1 - np.argmax(obs[::-1], axis=0)
    else:  # pragma: no cover - checked by check_rule
        raise ParameterError(f"unknown rule {rule!r}")
    return np.where(any_obs, idx, -1)


def compose(stack: np.ndarray, idx: np.ndarray, fill: np.ndarray | int = NODATA) -> np.ndarray:
    """``stack[idx[p], p]`` per pixel ((n, h, w) or (n, bands, h, w) -> (h, w) or (bands, h, w)); ``fill``
    where ``idx`` is -1."""
    safe = np.maximum(idx, 0)
    if stack.ndim == 3:
        out = np.take_along_axis(stack, safe[None], axis=0)[0]
        return np.where(idx >= 0, out, fill).astype(stack.dtype)
    out = np.take_along_axis(stack, safe[None, None], axis=0)[0]
    return np.where(idx[None] >= 0, out, fill).astype(stack.dtype)
