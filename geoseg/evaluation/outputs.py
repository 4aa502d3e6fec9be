"""The files of ``geoseg evaluate``: the metrics as JSON and the confusion matrix as a PNG, both written
atomically (:mod:`geoseg._util.atomic`: a temporary file beside the target, renamed into place)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg._util.atomic import atomic_write
from geoseg.errors import OutputError, OutputExistsError
from geoseg.evaluation.metrics import Metrics
from geoseg.io.output import ensure_writable_dir

if TYPE_CHECKING:
    from geoseg.evaluation.result import Evaluation

__all__ = ["check_output_files", "write_json", "write_confusion_png"]

#: What a failed write's error tells the user to do.
WRITE_HINT = "choose a writable path"


def check_output_files(paths: Iterable[str | os.PathLike | None], overwrite: bool) -> None:
    """Refuse early: an output that exists without ``overwrite``, or a folder we cannot write into."""
    for p in paths:
        if p is None or os.fspath(p) == "-":
            continue
        p = Path(p)
        if p.is_dir():
            raise OutputError(f"output {p} is a directory; give a file path")
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p} already exists; pass --overwrite or choose another path")
        ensure_writable_dir(p.parent, "choose a writable path")


def write_json(evaluation: Evaluation, path: str | os.PathLike, overwrite: bool = False) -> str:
    text = json.dumps(evaluation.to_json(), indent=2, allow_nan=False) + "\n"

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    return atomic_write(path, write, overwrite=overwrite, hint=WRITE_HINT, mkdir=True)


def _compact(n: int) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def write_confusion_png(metrics: Metrics, path: str | os.PathLike, overwrite: bool = False,
                        title: str | None = None) -> str:
    """Row-normalised confusion matrix (share of each truth class) with pixel counts, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = metrics.confusion.counts.astype(np.float64)
    k = len(metrics.classes)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
    labels = [f"{c.name} ({c.value})" if c.name != str(c.value) else c.name for c in metrics.classes]
    side = min(16.0, max(5.0, 0.55 * k + 3.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the truth class (row)")
    ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if k <= 25:
        fs = 9 if k <= 10 else 7
        for i in range(k):
            for j in range(k):
                if cm[i, j] == 0 and not (rows[i, 0] > 0):
                    continue
                s = share[i, j]
                ax.text(j, i, f"{100 * s:.0f}%\n{_compact(int(cm[i, j]))}" if not np.isnan(s) else "",
                        ha="center", va="center", fontsize=fs,
                        color="white" if (not np.isnan(s) and s > 0.5) else "black")
    head = title or "confusion matrix"
    ax.set_title(f"{head}\nmIoU {metrics.miou:.3f}  pixel accuracy {metrics.pixel_accuracy:.3f}  "
                 f"kappa {metrics.kappa:.3f}  ({metrics.pixels} pixels)", fontsize=10)

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png")

    return atomic_write(path, write, overwrite=overwrite, hint=WRITE_HINT, mkdir=True)
