"""Losses (weighted sum of cross-entropy, Dice and focal) and validation scores from a confusion matrix.

Targets are class indexes with ``-1`` for ignored pixels, which contribute to no
loss term and no score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -1


class FocalLoss(nn.Module):
    """Softmax focal loss ``-w_t (1 - p_t)^gamma log p_t`` averaged over non-ignored pixels."""

    weight: torch.Tensor | None  # a buffer (not saved)

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = target != IGNORE
        t = torch.where(keep, target, torch.zeros_like(target))
        logp = F.log_softmax(logits, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        loss = -((1.0 - logp.exp()) ** self.gamma) * logp
        if self.weight is not None:
            loss = loss * self.weight[t]
        loss = loss[keep]
        return loss.mean() if loss.numel() else logits.sum() * 0.0


class CombinedLoss(nn.Module):
    """``sum_i w_i * loss_i`` over ``terms`` = {'ce'|'dice'|'focal': weight}."""

    class_weights: torch.Tensor | None  # a buffer (not saved)

    def __init__(self, terms: dict[str, float], n_classes: int, class_weights: Sequence[float] | None = None,
                 focal_gamma: float = 2.0) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.terms = {k: float(v) for k, v in terms.items() if float(v) > 0}
        cw = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", cw, persistent=False)
        self.dice = DiceLoss(mode="multiclass", ignore_index=IGNORE) if "dice" in self.terms else None
        self.focal = FocalLoss(focal_gamma, cw) if "focal" in self.terms else None
        self.n_classes = n_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        for name, w in self.terms.items():
            if name == "ce":
                part = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE)
            elif name == "dice":
                part = self.dice(logits, target)  # type: ignore[misc]
            else:
                part = self.focal(logits, target)  # type: ignore[misc]
            total = total + w * part
        return total


def confusion(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n) int64 confusion matrix, rows = truth, columns = prediction; truth < 0 ignored."""
    keep = truth >= 0
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(cm: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Pixel accuracy, mIoU (mean over classes present in the truth), per-class IoU/precision/recall/F1.

    Per-class values are None where undefined (e.g. IoU of a class neither present nor predicted).
    """
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    union = support + predicted - tp
    total = cm.sum()

    def div(a: float, b: float) -> float | None:
        return float(a / b) if b > 0 else None

    per_class = {}
    for i, name in enumerate(names):
        prec, rec = div(tp[i], predicted[i]), div(tp[i], support[i])
        f1 = None if prec is None or rec is None else (0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
        per_class[name] = {"iou": div(tp[i], union[i]), "precision": prec, "recall": rec, "f1": f1,
                           "support": int(support[i])}
    present = support > 0
    ious = tp[present] / union[present]
    return {
        "pixel_accuracy": div(tp.sum(), total),
        "miou": float(ious.mean()) if present.any() else None,
        "mean_accuracy": float((tp[present] / support[present]).mean()) if present.any() else None,
        "pixels": int(total),
        "per_class": per_class,
    }
