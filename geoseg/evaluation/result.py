"""What an evaluation returns: per-pair summaries and the metrics (and their JSON form)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from geoseg.evaluation.metrics import Metrics

__all__ = ["InputSummary", "Evaluation"]


@dataclass(frozen=True)
class InputSummary:
    """One prediction/truth pair of an evaluation."""

    prediction: str
    truth: str
    pixels: int
    nodata_pixels: int
    ignored_pixels: int
    pixel_accuracy: float
    miou: float
    image: str | None = None  # the scene, with evaluate_model


@dataclass(frozen=True)
class Evaluation:
    metrics: Metrics
    inputs: tuple[InputSummary, ...]
    aligned: bool
    ignore: tuple[int, ...]
    seconds: float
    model: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def nodata_pixels(self) -> int:
        return sum(i.nodata_pixels for i in self.inputs)

    @property
    def ignored_pixels(self) -> int:
        return sum(i.ignored_pixels for i in self.inputs)

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        from geoseg._version import __version__

        return {
            "geoseg_version": __version__,
            "model": self.model,
            "inputs": [
                {"prediction": i.prediction, "truth": i.truth, **({"image": i.image} if i.image else {}),
                 "pixels": i.pixels, "nodata_pixels": i.nodata_pixels, "ignored_pixels": i.ignored_pixels,
                 "pixel_accuracy": num(i.pixel_accuracy), "miou": num(i.miou)}
                for i in self.inputs
            ],
            "aligned": self.aligned,
            "ignore": list(self.ignore),
            "nodata_pixels": self.nodata_pixels,
            "ignored_pixels": self.ignored_pixels,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
            **self.metrics.to_json(),
        }
