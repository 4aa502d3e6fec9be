"""Segmentation metrics from a confusion matrix: pure numpy, no I/O.

A :class:`ConfusionMatrix` is accumulated window by window (:func:`confusion_counts`
per window, then ``+``), so a whole scene never has to be in memory; rows are the
truth, columns the prediction, and both are labelled by the same sorted class
values (any integers, not necessarily contiguous).  :func:`compute_metrics` turns
it into a frozen :class:`Metrics`.

Which pixels count
    A pixel is counted when it is valid in both rasters (``valid`` mask: nodata of
    either raster is excluded) and its *truth* value is not in ``ignore``.  The
    ignore values apply to the truth only (like ``ignore_index`` elsewhere): a pixel
    whose prediction is an ignored value while its truth is a real class is counted,
    as an error, in that value's column.

Absent classes (``TP``/``FP``/``FN`` of class *c*; ``support`` = truth pixels of *c*)
    * ``IoU = TP / (TP + FP + FN)`` and ``F1 = 2TP / (2TP + FP + FN)``: defined for
      every class present in the truth *or* the prediction (a class that is only
      predicted, or only in the truth, scores 0); NaN for a class absent from both.
    * ``precision = TP / (TP + FP)``: NaN for a class never predicted.
    * ``recall = TP / (TP + FN)``: NaN for a class absent from the truth.
    * mIoU is the mean IoU over the classes present in the truth or the prediction
      (NaN classes are left out, not counted as 0 or 1).  Mean (class-balanced)
      accuracy is the mean recall over the classes present in the truth.
      Frequency-weighted IoU weighs each class's IoU by its share of the truth
      pixels.  Cohen's kappa is ``(p_o - p_e) / (1 - p_e)``; it is NaN when
      ``p_e = 1`` (truth and prediction are one and the same single class).
    * With no counted pixel at all every metric is NaN.

NaN is written as ``null`` by :meth:`Metrics.to_json`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Value ranges up to this wide are counted with one dense ``bincount``; wider ones go through ``np.unique``.
_DENSE_RANGE = 1024


@dataclass(frozen=True, eq=False)
class ConfusionMatrix:
    """Pixel counts: ``counts[i, j]`` = pixels of truth ``values[i]`` predicted as ``values[j]``."""

    values: tuple[int, ...]
    counts: np.ndarray  # (K, K) int64

    def __post_init__(self) -> None:
        values = tuple(int(v) for v in self.values)
        counts = np.array(self.counts, dtype=np.int64)  # a private, read-only copy
        if counts.shape != (len(values), len(values)):
            raise ValueError(f"counts shape {counts.shape} does not match {len(values)} class values")
        if list(values) != sorted(set(values)):
            raise ValueError(f"class values must be sorted and unique, got {values}")
        counts.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "counts", counts)

    @classmethod
    def empty(cls, values: Iterable[int] = ()) -> ConfusionMatrix:
        v = tuple(sorted({int(x) for x in values}))
        return cls(v, np.zeros((len(v), len(v)), dtype=np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def reindex(self, values: Iterable[int]) -> ConfusionMatrix:
        """The same counts over ``values`` (which must include every value with a count)."""
        new = tuple(sorted({int(v) for v in values}))
        pos = {v: i for i, v in enumerate(new)}
        lost = [v for i, v in enumerate(self.values)
                if v not in pos and (self.counts[i].any() or self.counts[:, i].any())]
        if lost:
            raise ValueError(f"reindexing would drop counted class values {lost}")
        keep = [i for i, v in enumerate(self.values) if v in pos]
        idx = np.array([pos[self.values[i]] for i in keep], dtype=np.intp)
        out = np.zeros((len(new), len(new)), dtype=np.int64)
        if len(keep):
            out[np.ix_(idx, idx)] = self.counts[np.ix_(keep, keep)]
        return ConfusionMatrix(new, out)

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        if self.values == other.values:
            return ConfusionMatrix(self.values, self.counts + other.counts)
        union = sorted(set(self.values) | set(other.values))
        a, b = self.reindex(union), other.reindex(union)
        return ConfusionMatrix(a.values, a.counts + b.counts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return self.values == other.values and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ConfusionMatrix(values={self.values}, total={self.total})"


def confusion_counts(
    truth: np.ndarray,
    pred: np.ndarray,
    valid: np.ndarray | None = None,
    ignore: Iterable[int] = (),
) -> ConfusionMatrix:
    """Confusion matrix of one window (or a whole array) of integer class codes.

    ``valid`` (bool, same shape) excludes pixels that are nodata in either raster;
    pixels whose truth is in ``ignore`` are excluded too.  Only values that occur in
    the counted pixels appear in the result's ``values``.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} differs from prediction shape {pred.shape}")
    for name, a in (("truth", truth), ("prediction", pred)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise TypeError(f"{name} must hold integer class codes, got dtype {a.dtype}")
    keep = np.ones(truth.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).copy()
    if keep.shape != truth.shape:
        raise ValueError(f"valid mask shape {keep.shape} differs from the data shape {truth.shape}")
    ignore = [int(v) for v in ignore]
    if ignore:
        keep &= ~np.isin(truth, ignore)
    if truth.dtype.itemsize <= 2 and pred.dtype.itemsize <= 2 and truth.size:
        # Fast path for (u)int8/(u)int16 codes: one bincount over all pixels, excluded ones in an extra bin.
        lo = int(min(truth.min(), pred.min()))
        span = int(max(truth.max(), pred.max())) - lo + 1
        if span <= _DENSE_RANGE:
            code = (truth.astype(np.intp) - lo) * span
            code += pred
            code -= lo
            code[~keep] = span * span
            dense = np.bincount(code.ravel(), minlength=span * span + 1)[: span * span].reshape(span, span)
            present = np.flatnonzero(dense.any(axis=0) | dense.any(axis=1))
            return ConfusionMatrix(tuple(int(lo + i) for i in present), dense[np.ix_(present, present)])
    t = truth[keep].astype(np.int64, copy=False)
    p = pred[keep].astype(np.int64, copy=False)
    if t.size == 0:
        return ConfusionMatrix.empty()
    lo = int(min(t.min(), p.min()))
    hi = int(max(t.max(), p.max()))
    span = hi - lo + 1
    if span <= _DENSE_RANGE:
        dense = np.bincount((t - lo) * span + (p - lo), minlength=span * span).reshape(span, span)
        present = np.flatnonzero(dense.any(axis=0) | dense.any(axis=1))
        return ConfusionMatrix(tuple(int(lo + i) for i in present), dense[np.ix_(present, present)])
    values, inverse = np.unique(np.concatenate([t, p]), return_inverse=True)
    k = len(values)
    ti, pi = inverse[: t.size], inverse[t.size :]
    counts = np.bincount(ti * k + pi, minlength=k * k).reshape(k, k)
    return ConfusionMatrix(tuple(int(v) for v in values), counts)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


@dataclass(frozen=True)
class ClassMetrics:
    value: int
    name: str
    iou: float
    precision: float
    recall: float
    f1: float
    support: int  # truth pixels of the class
    predicted: int  # pixels predicted as the class
    true_positives: int


@dataclass(frozen=True)
class Metrics:
    """All metrics of one evaluation (NaN where undefined; see the module docstring)."""

    pixels: int
    pixel_accuracy: float
    mean_accuracy: float
    miou: float
    fwiou: float
    kappa: float
    classes: tuple[ClassMetrics, ...]
    confusion: ConfusionMatrix

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(c.value for c in self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def by_value(self, value: int) -> ClassMetrics:
        for c in self.classes:
            if c.value == value:
                return c
        raise KeyError(value)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as None); the confusion matrix rows are truth, columns prediction."""
        return {
            "pixels": self.pixels,
            "pixel_accuracy": _num(self.pixel_accuracy),
            "mean_accuracy": _num(self.mean_accuracy),
            "miou": _num(self.miou),
            "fwiou": _num(self.fwiou),
            "kappa": _num(self.kappa),
            "classes": [
                {"value": c.value, "name": c.name, "iou": _num(c.iou), "precision": _num(c.precision),
                 "recall": _num(c.recall), "f1": _num(c.f1), "support": c.support, "predicted": c.predicted,
                 "true_positives": c.true_positives}
                for c in self.classes
            ],
            "confusion_matrix": {
                "rows": "truth",
                "columns": "prediction",
                "values": list(self.confusion.values),
                "counts": self.confusion.counts.tolist(),
            },
        }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def compute_metrics(
    cm: ConfusionMatrix,
    names: Mapping[int, str] | None = None,
    classes: Iterable[int] | None = None,
) -> Metrics:
    """Metrics of ``cm``.  ``classes`` adds declared class values that may be absent (they get NaN);
    ``names`` maps values to class names (default: the value as text)."""
    if classes is not None:
        cm = cm.reindex(set(cm.values) | {int(v) for v in classes})
    names = dict(names or {})
    c = cm.counts.astype(np.float64)
    n = float(c.sum())
    tp = np.diag(c)
    support = c.sum(axis=1)  # truth
    predicted = c.sum(axis=0)
    fp, fn = predicted - tp, support - tp
    iou = _ratio(tp, tp + fp + fn)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if n > 0:
        pixel_accuracy = float(tp.sum() / n)
        fwiou = float(np.sum(np.where(support > 0, support / n * np.nan_to_num(iou), 0.0)))
        pe = float(np.sum(support * predicted) / (n * n))
        kappa = (pixel_accuracy - pe) / (1.0 - pe) if pe < 1.0 else math.nan
    else:
        pixel_accuracy = fwiou = kappa = math.nan
    per_class = tuple(
        ClassMetrics(
            value=v, name=str(names.get(v, v)), iou=float(iou[i]), precision=float(precision[i]),
            recall=float(recall[i]), f1=float(f1[i]), support=int(support[i]), predicted=int(predicted[i]),
            true_positives=int(tp[i]),
        )
        for i, v in enumerate(cm.values)
    )
    return Metrics(
        pixels=int(n),
        pixel_accuracy=pixel_accuracy,
        mean_accuracy=_nanmean(recall),
        miou=_nanmean(iou),
        fwiou=fwiou,
        kappa=float(kappa),
        classes=per_class,
        confusion=cm,
    )


def metrics_from_arrays(
    truth: np.ndarray,
    pred: np.ndarray,
    valid: np.ndarray | None = None,
    ignore: Iterable[int] = (),
    names: Mapping[int, str] | None = None,
    classes: Sequence[int] | None = None,
) -> Metrics:
    """One-shot convenience: :func:`confusion_counts` then :func:`compute_metrics`."""
    return compute_metrics(confusion_counts(truth, pred, valid, ignore), names, classes)
