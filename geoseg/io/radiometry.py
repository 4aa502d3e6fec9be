"""Radiometry: making a scene's values mean what the model card's inputs mean.

A scene's DN reach the network as the card's DN through one per-band linear map, an :class:`InputTransform`
(``card_dn = dn * scale + offset``), decided once before any work (:func:`decide_transform`):

1. explicit options (``--input-scale``/``--input-offset``);
2. the scene's own metadata: GDAL band scale/offset (``physical = dn * scale + offset``, e.g. a Sentinel-2
   baseline-04.00 L1C band: scale 1e-4, offset -0.1), converted with the card's declaration
   (``physical = card_dn * dn_scale + dn_offset``);
3. otherwise a statistics check of a decimated sample against the card's training statistics, which
   catches the common mistakes: values 10x too small (reflectance x 1000), float reflectance 0..1, a +1000
   DN offset (processing baseline >= 04.00 without its metadata), bands in the wrong order.  By default
   a suspicious scene is refused with one line naming the likely cause and the exact option;
   ``--input-scale auto`` applies what was detected.

Pure numpy and rasterio; no torch, no dask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio

from geoseg.errors import BandMismatchError, InputError, ParameterError

__all__ = ["InputTransform", "SceneStats", "apply_transform", "sample_stats", "array_stats", "diagnose",
           "decide_transform", "decide", "metadata_transform"]

#: The decimated sample of the statistics check: at most this many pixels a side.
SAMPLE_SIDE = 512
#: A scene whose median band/training ratio is off by more than this factor (log10) has other units.
SCALE_TOLERANCE_LOG10 = 0.5
#: Sentinel-2 DN: a baseline >= 04.00 product adds 1000 to every valid value (RADIO_ADD_OFFSET -1000).
S2_OFFSET = 1000.0
#: With the +1000 offset no valid value is below 1000 DN (DN = reflectance x 10000 + 1000); a real scene
#: nearly always has some in its darkest band (water, shadow), deserts and clouded scenes too.
DARK_DN = 1000.0
#: A band order must fit the training statistics this much better than the given one to be named.
ORDER_MARGIN = 0.1


@dataclass(frozen=True)
class InputTransform:
    """``card_dn = dn * scale + offset`` per band, and how it was decided."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    source: str  # "none", "options", "band metadata", "detected", "unchecked"
    detected: str | None = None  # the cause the statistics check found, if any
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_identity(self) -> bool:
        return all(s == 1.0 for s in self.scale) and all(o == 0.0 for o in self.offset)

    def to_json(self) -> dict:
        return {"source": self.source, "scale": list(self.scale), "offset": list(self.offset),
                "detected": self.detected, "notes": list(self.notes)}


def apply_transform(data: np.ndarray, scale: Sequence[float] | None, offset: Sequence[float] | None) -> np.ndarray:
    """``data * scale + offset`` per band of a (bands, h, w) array, as float32 (the prediction tasks call this
    with an :class:`InputTransform`'s numbers); ``None``: the data unchanged."""
    if scale is None or offset is None:
        return data
    return data * np.asarray(scale, np.float32)[:, None, None] + np.asarray(offset, np.float32)[:, None, None]


def identity(n: int, source: str = "none") -> InputTransform:
    return InputTransform((1.0,) * n, (0.0,) * n, source)


@dataclass(frozen=True)
class SceneStats:
    """Robust statistics of a decimated sample of the selected bands (valid pixels only)."""

    medians: tuple[float, ...]
    dark: float  # the lowest 0.01-percentile of the bands (about the darkest valid value)
    quartiles: tuple[tuple[float, ...], tuple[float, ...]]  # per band (25 %, 75 %)
    maximum: float
    floating: bool
    pixels: int


def sample_stats(src: rasterio.DatasetReader, bands: Sequence[int]) -> SceneStats | None:
    """Statistics of ``bands`` from a decimated read (GDAL uses overviews when the file has them); None
    when the sample has no valid pixel."""
    step = max(1, math.ceil(max(src.height, src.width) / SAMPLE_SIDE))
    shape = (len(bands), max(1, src.height // step), max(1, src.width // step))
    from rasterio.enums import Resampling

    data = src.read(list(bands), out_shape=shape, resampling=Resampling.nearest)
    floating = np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.floating)
    return array_stats(data, [src.nodatavals[b - 1] for b in bands], floating)


def array_stats(data: np.ndarray, nodata: Sequence[float | None], floating: bool) -> SceneStats | None:
    """Statistics of a (bands, h, w) sample; a pixel counts when every band is finite and not its ``nodata``."""
    data = np.asarray(data, dtype=np.float64)
    valid = np.isfinite(data).all(axis=0)
    for i, nd in enumerate(nodata):
        if nd is not None:
            valid &= data[i] != nd
    if not valid.any():
        return None
    v = data[:, valid]
    return SceneStats(
        medians=tuple(float(m) for m in np.median(v, axis=1)),
        dark=float(np.percentile(v, 0.01, axis=1).min()),
        quartiles=tuple(tuple(float(x) for x in q) for q in np.percentile(v, [25, 75], axis=1)),  # type: ignore
        maximum=float(v.max()),
        floating=floating,
        pixels=int(valid.sum()),
    )


def _power_of_ten(x: float) -> float:
    return float(10 ** round(math.log10(x)))


def _fit(stats: SceneStats, order: Sequence[int], mean: np.ndarray, std: np.ndarray) -> float:
    """How far the sample's medians and robust spreads (bands taken in ``order``) are from the training
    statistics (0: identical)."""
    med = np.asarray(stats.medians)[list(order)]
    q1, q3 = (np.asarray(q)[list(order)] for q in stats.quartiles)
    spread = np.maximum((q3 - q1) / 1.349, 1e-9)
    return float(np.sqrt(np.mean(((med - mean) / std) ** 2)) + np.sqrt(np.mean(np.log(spread / std) ** 2)))


def _order_problem(stats: SceneStats, mean: np.ndarray, std: np.ndarray, names: Sequence[str]) -> str | None:
    """A reversed band order, or red and blue swapped, that fits the training statistics clearly better than
    the order given: the description of it, or None.  (Across the 41 OSCD scenes of shared/ and the sample:
    no false alarm; reversed bands always caught, B2/B4 swapped in 23 of 41.)"""
    n = len(mean)
    if n < 3:
        return None
    here = _fit(stats, range(n), mean, std)
    candidates = {"in reverse order": list(range(n))[::-1]}
    upper = [b.upper() for b in names]
    if "B2" in upper and "B4" in upper:
        perm = list(range(n))
        i, j = upper.index("B2"), upper.index("B4")
        perm[i], perm[j] = j, i
        candidates["with red and blue (B4, B2) swapped"] = perm
    for what, perm in candidates.items():
        if _fit(stats, perm, mean, std) < here - ORDER_MARGIN:
            return what
    return None


def diagnose(stats: SceneStats, means: Sequence[float], names: Sequence[str]) -> tuple[str, float, float] | None:
    """(cause, scale, offset) that would make ``stats`` look like the training data, or None when the scene
    looks right.  ``scale``/``offset`` map the scene's DN to the card's DN."""
    med, mu = np.asarray(stats.medians), np.asarray(means, dtype=np.float64)
    ok = (med > 0) & (mu > 0)
    if ok.sum() == 0:
        return None
    log_ratio = float(np.median(np.log10(med[ok] / mu[ok])))
    if abs(log_ratio) > SCALE_TOLERANCE_LOG10:
        scale = _power_of_ten(10 ** -log_ratio)
        if stats.floating and stats.maximum <= 2.0:
            cause = "float reflectance 0..1, not the model's DN"
        elif scale > 1:
            cause = (f"values about {scale:g} x smaller than the model's training data "
                     f"(reflectance x {10000 / scale:g}?)")
        else:
            cause = f"values about {1 / scale:g} x larger than the model's training data"
        return cause, scale, 0.0
    if stats.dark >= DARK_DN and min(stats.medians) > S2_OFFSET:
        return (f"no value is below {stats.dark:.0f} DN in any band, as with the +{S2_OFFSET:.0f} radiometric "
                "offset of Sentinel-2 processing baseline 04.00 or later (products since January 2022) read "
                "without its metadata"), 1.0, -S2_OFFSET
    return None


def _flag(scale: float, offset: float) -> str:
    parts = []
    if scale != 1.0:
        parts.append(f"--input-scale {scale:g}")
    if offset != 0.0:
        parts.append(f"--input-offset {offset:g}")
    return " ".join(parts)


def metadata_transform(scales: Sequence[float | None], offsets: Sequence[float | None], dn_scale: float,
                   dn_offset: float) -> InputTransform | None:
    """The map of values with band ``scales``/``offsets`` metadata (``physical = dn * scale + offset``, None:
    none) into DN declared by ``dn_scale``/``dn_offset``; None when the metadata is the identity."""
    sc = [1.0 if x is None else float(x) for x in scales]
    of = [0.0 if x is None else float(x) for x in offsets]
    if all(x == 1.0 for x in sc) and all(x == 0.0 for x in of):
        return None
    return InputTransform(tuple(x / dn_scale for x in sc), tuple((o - dn_offset) / dn_scale for o in of),
                          "band metadata")


def decide_transform(path: str, bands: Sequence[int], band_names: Sequence[str], *, means: Sequence[float] | None,
                     stds: Sequence[float] | None = None,
                     dn_scale: float | None, dn_offset: float = 0.0, input_scale: float | str | None = None,
                     input_offset: float | None = None, check: bool = True, label: str | None = None
                     ) -> InputTransform:
    """The transform of ``bands`` of ``path`` into the card's DN (see the module docstring).

    ``means``: the card's training means per band (card DN), or None when the card has none to compare
    with; ``dn_scale``/``dn_offset``: the card's input declaration (None: undeclared).  ``label``: how messages
    name the scene (default ``path``; a product's VRT XML is no name).
    """
    with rasterio.open(path) as src:
        scales = [src.scales[b - 1] for b in bands]
        offsets = [src.offsets[b - 1] for b in bands]
        return decide(lambda: sample_stats(src, bands), scales, offsets, band_names, means=means, stds=stds,
                      dn_scale=dn_scale, dn_offset=dn_offset, input_scale=input_scale, input_offset=input_offset,
                      check=check, label=path if label is None else label)


def decide(sample: Callable[[], SceneStats | None], scales: Sequence[float | None], offsets: Sequence[float | None],
           band_names: Sequence[str], *, means: Sequence[float] | None, stds: Sequence[float] | None,
           dn_scale: float | None, dn_offset: float, input_scale: float | str | None, input_offset: float | None,
           check: bool, label: str) -> InputTransform:
    """:func:`decide_transform` for any source: ``sample()`` gives the statistics sample (called only when the
    check runs), ``scales``/``offsets`` the bands' own metadata (None: none), ``label`` names the scene."""
    n = len(band_names)
    name = label
    if isinstance(input_scale, str) and input_scale != "auto":
        raise ParameterError(f"--input-scale {input_scale!r} is not a number or 'auto'; e.g. --input-scale 10")
    if input_offset is not None or (input_scale is not None and input_scale != "auto"):
        s = 1.0 if input_scale is None else float(input_scale)
        if not s > 0:
            raise ParameterError(f"--input-scale {input_scale} must be > 0")
        return InputTransform((s,) * n, (float(input_offset or 0.0),) * n, "options")
    if dn_scale is not None:
        meta = metadata_transform(scales, offsets, dn_scale, dn_offset)
        if meta is not None:
            return meta
    if not check:
        return identity(n, "unchecked")
    if means is None or dn_scale is None:
        return identity(n)
    stats = sample()
    if stats is None:
        return identity(n)
    found = diagnose(stats, means, band_names)
    if found is None:
        order = None if stds is None else _order_problem(stats, np.asarray(means, np.float64),
                                                         np.asarray(stds, np.float64), band_names)
        if order is not None:
            raise BandMismatchError(
                f"{name}: the bands look {order} compared with the model's training data "
                f"({','.join(band_names)}); give them in the model's order with --bands, or pass --no-input-check")
        return identity(n)
    cause, scale, offset = found
    if input_scale == "auto":
        return InputTransform((scale,) * n, (offset,) * n, "detected", cause)
    if offset:
        raise InputError(f"{name}: {cause}; pass {_flag(scale, offset)} (or --input-scale auto) if so, or "
                         "--input-offset 0 if the scene really has no dark surface (desert, cloud)")
    raise InputError(f"{name}: {cause}; if so, pass {_flag(scale, offset)} (or --input-scale auto), "
                     "or --no-input-check if the values are right")
