"""geoseg.metrics against confusion matrices and metrics computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from geoseg.evaluation.metrics import ConfusionMatrix, confusion_counts, metrics_from_arrays

NAN = math.nan

# The hand example.  Index 10 is nodata (valid=False), indexes 8 and 9 have the ignored truth 9.
TRUTH = np.array([0, 0, 0, 1, 1, 1, 1, 5, 9, 9, 0])
PRED = np.array([0, 0, 1, 1, 1, 2, 1, 1, 0, 2, 0])
VALID = np.array([True] * 10 + [False])
NAMES = {0: "water", 1: "trees", 2: "built", 3: "crops", 5: "snow"}
# Counted pixels 0..7: truth 0 0 0 1 1 1 1 5 / pred 0 0 1 1 1 2 1 1.  Class 3 is declared but absent,
# class 2 only predicted, class 5 only in the truth.  Rows truth, columns prediction, values 0 1 2 3 5:
HAND_CM = np.array([
    [2, 1, 0, 0, 0],
    [0, 3, 1, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0],
])
#               value: (IoU,  precision, recall, F1,  support, predicted)
HAND_CLASSES = {
    0: (2 / 3, 1.0, 2 / 3, 4 / 5, 3, 2),    # TP 2, FP 0, FN 1
    1: (3 / 6, 3 / 5, 3 / 4, 6 / 9, 4, 5),  # TP 3, FP 2, FN 1
    2: (0.0, 0.0, NAN, 0.0, 0, 1),         # only predicted: TP 0, FP 1
    3: (NAN, NAN, NAN, NAN, 0, 0),         # absent from both
    5: (0.0, NAN, 0.0, 0.0, 1, 0),         # only in the truth: TP 0, FN 1
}
HAND_PIXEL_ACCURACY = 5 / 8
HAND_MIOU = (2 / 3 + 1 / 2 + 0 + 0) / 4  # classes 0, 1, 2, 5 (3 is absent from both)
HAND_MEAN_ACCURACY = (2 / 3 + 3 / 4 + 0) / 3  # recall of classes present in the truth: 0, 1, 5
HAND_FWIOU = 3 / 8 * 2 / 3 + 4 / 8 * 1 / 2 + 1 / 8 * 0
# p_o = 5/8; rows 3 4 0 0 1, columns 2 5 1 0 0: p_e = (3*2 + 4*5) / 64 = 13/32
HAND_KAPPA = (5 / 8 - 13 / 32) / (1 - 13 / 32)  # = 7/19


def assert_same(actual: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(actual), f"expected NaN, got {actual}"
    else:
        assert actual == pytest.approx(expected, abs=1e-12)


def hand_metrics():
    return metrics_from_arrays(TRUTH, PRED, VALID, ignore=[9], names=NAMES, classes=[0, 1, 2, 3, 5])


def test_confusion_matrix_of_the_hand_example():
    cm = confusion_counts(TRUTH, PRED, VALID, ignore=[9])
    assert cm.values == (0, 1, 2, 5)  # only values that occur in counted pixels
    assert np.array_equal(cm.reindex([0, 1, 2, 3, 5]).counts, HAND_CM)
    assert cm.total == 8


def test_metrics_of_the_hand_example():
    m = hand_metrics()
    assert m.values == (0, 1, 2, 3, 5)
    assert m.names == ("water", "trees", "built", "crops", "snow")
    assert m.pixels == 8
    assert np.array_equal(m.confusion.counts, HAND_CM)
    assert_same(m.pixel_accuracy, HAND_PIXEL_ACCURACY)
    assert_same(m.miou, HAND_MIOU)
    assert_same(m.mean_accuracy, HAND_MEAN_ACCURACY)
    assert_same(m.fwiou, HAND_FWIOU)
    assert_same(m.kappa, HAND_KAPPA)
    assert m.kappa == pytest.approx(7 / 19)
    for value, (iou, precision, recall, f1, support, predicted) in HAND_CLASSES.items():
        c = m.by_value(value)
        assert_same(c.iou, iou)
        assert_same(c.precision, precision)
        assert_same(c.recall, recall)
        assert_same(c.f1, f1)
        assert (c.support, c.predicted) == (support, predicted), value


def test_ignore_and_nodata_change_the_counts():
    """Without ignore/valid the excluded pixels are counted (guards against ignoring the arguments)."""
    all_pixels = confusion_counts(TRUTH, PRED)
    assert all_pixels.total == 11 and 9 in all_pixels.values
    no_ignore = confusion_counts(TRUTH, PRED, VALID)
    assert no_ignore.total == 10
    no_mask = confusion_counts(TRUTH, PRED, ignore=[9])
    assert no_mask.total == 9
    assert no_mask.reindex([0, 1, 2, 5]).counts[0, 0] == 3  # the nodata pixel is a (0, 0) hit


def test_ignored_value_predicted_on_labelled_pixels_counts_as_an_error():
    truth = np.array([1, 1, 0, 0])
    pred = np.array([0, 1, 0, 1])
    m = metrics_from_arrays(truth, pred, ignore=[0])
    assert m.pixels == 2
    assert m.values == (0, 1)
    assert m.pixel_accuracy == 0.5
    assert m.by_value(0).predicted == 1 and m.by_value(0).support == 0
    assert m.by_value(0).iou == 0.0
    assert m.miou == pytest.approx((0.0 + 0.5) / 2)


def test_two_classes_by_hand():
    # truth 1 1 1 2 2 2 / pred 1 1 2 2 2 1: TP1 2 FP1 1 FN1 1; TP2 2 FP2 1 FN2 1
    m = metrics_from_arrays(np.array([1, 1, 1, 2, 2, 2]), np.array([1, 1, 2, 2, 2, 1]))
    assert np.array_equal(m.confusion.counts, [[2, 1], [1, 2]])
    assert m.by_value(1).iou == pytest.approx(0.5)
    assert m.by_value(2).f1 == pytest.approx(2 / 3)
    assert m.pixel_accuracy == pytest.approx(4 / 6)
    assert m.kappa == pytest.approx((4 / 6 - 0.5) / 0.5)  # p_e = (3*3 + 3*3)/36 = 1/2
    assert m.fwiou == pytest.approx(0.5)


def test_perfect_single_class_agreement():
    m = metrics_from_arrays(np.full((3, 3), 4), np.full((3, 3), 4), classes=[4, 7])
    assert m.pixel_accuracy == 1.0 and m.miou == 1.0 and m.mean_accuracy == 1.0 and m.fwiou == 1.0
    assert math.isnan(m.kappa)  # p_e = 1: kappa undefined
    assert math.isnan(m.by_value(7).iou)


def test_no_counted_pixel_gives_nan_everywhere():
    m = metrics_from_arrays(np.array([3, 3]), np.array([1, 2]), ignore=[3], classes=[1, 2])
    assert m.pixels == 0
    for x in (m.pixel_accuracy, m.mean_accuracy, m.miou, m.fwiou, m.kappa, m.by_value(1).iou):
        assert math.isnan(x)


def brute_force(truth, pred, valid, ignore):
    counts: dict[tuple[int, int], int] = {}
    for t, p, v in zip(truth.ravel().tolist(), pred.ravel().tolist(), valid.ravel().tolist()):
        if v and t not in ignore:
            counts[(t, p)] = counts.get((t, p), 0) + 1
    values = sorted({k for pair in counts for k in pair})
    cm = np.zeros((len(values), len(values)), dtype=np.int64)
    for (t, p), n in counts.items():
        cm[values.index(t), values.index(p)] = n
    return tuple(values), cm


@pytest.mark.parametrize("values,dtype", [
    ([0, 1, 2, 3, 254], np.uint8),  # small codes: one bincount over all pixels
    ([-5, 0, 7], np.int16),
    ([0, 1, 2, 3, 254], np.int32),  # compressed valid pixels, dense bincount
    ([1, 2, 65535], np.uint16),  # small dtype but a wide range
    ([3, 100_000, -40_000, 12], np.int64),  # np.unique path
])
def test_confusion_counts_match_a_brute_force_count(values, dtype):
    rng = np.random.default_rng(len(values))
    truth = rng.choice(values, size=(37, 23)).astype(dtype)
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.choice(values, size=truth.shape)).astype(dtype)
    valid = rng.random(truth.shape) > 0.1
    ignore = [values[0]]
    cm = confusion_counts(truth, pred, valid, ignore)
    exp_values, exp_counts = brute_force(truth, pred, valid, ignore)
    assert cm.values == exp_values
    assert np.array_equal(cm.counts, exp_counts)


def test_summing_windows_equals_the_one_shot_matrix():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, (40, 50)).astype(np.uint8)
    pred = rng.integers(0, 6, (40, 50)).astype(np.uint8)
    truth[:20, :] = np.minimum(truth[:20, :], 2)  # windows see different value sets
    pred[20:, 25:] = 9
    whole = confusion_counts(truth, pred, ignore=[1])
    total = ConfusionMatrix.empty()
    for r in (0, 20):
        for c in (0, 25):
            total = total + confusion_counts(truth[r:r + 20, c:c + 25], pred[r:r + 20, c:c + 25], ignore=[1])
    assert total == whole
    assert whole.total == int((truth != 1).sum())


def test_reindex_refuses_to_drop_counts_and_inputs_are_checked():
    cm = confusion_counts(np.array([1, 2]), np.array([1, 1]))
    with pytest.raises(ValueError):
        cm.reindex([1])
    assert cm.reindex([0, 1, 2, 3]).total == 2
    with pytest.raises(TypeError):
        confusion_counts(np.array([1.0, 2.0]), np.array([1, 1]))
    with pytest.raises(ValueError):
        confusion_counts(np.array([1, 2, 3]), np.array([1, 1]))
    with pytest.raises(ValueError):
        ConfusionMatrix((2, 1), np.zeros((2, 2)))


def test_metrics_are_frozen_and_json_ready():
    m = hand_metrics()
    with pytest.raises(AttributeError):
        m.miou = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        m.confusion.counts[0, 0] = 99
    d = json.loads(json.dumps(m.to_json(), allow_nan=False))
    assert d["pixels"] == 8
    assert d["kappa"] == pytest.approx(7 / 19)
    assert d["miou"] == pytest.approx(HAND_MIOU)
    assert d["confusion_matrix"]["values"] == [0, 1, 2, 3, 5]
    assert d["confusion_matrix"]["counts"] == HAND_CM.tolist()
    crops = next(c for c in d["classes"] if c["value"] == 3)
    assert crops == {"value": 3, "name": "crops", "iou": None, "precision": None, "recall": None, "f1": None,
                     "support": 0, "predicted": 0, "true_positives": 0}
    built = next(c for c in d["classes"] if c["value"] == 2)
    assert built["recall"] is None and built["iou"] == 0.0
