#!/usr/bin/env python
"""The real-label check of a model package on the Slovenia eo-learn patch (shared/data/slovenia-eolearn).

Each clear scene (scene_2..scene_4; scene_0/1 are clouded) is predicted with ``geoseg.predict_scene``, the
Dynamic World classes are mapped to the LULC classes (docs/model.md), and the maps are compared with
``lulc.tif`` on the pixels with LULC != 0: per scene and pooled pixel accuracy, mIoU over the classes present,
mean class accuracy, and the pooled per-class IoU.

    .venv/bin/python benchmarks/slovenia_check.py                  # the default model
    .venv/bin/python benchmarks/slovenia_check.py --model /tmp/pkg --scenes 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "slovenia-eolearn"
#: Dynamic World class value -> LULC class value
DW_TO_LULC = {0: 5, 1: 2, 2: 3, 3: 6, 4: 1, 5: 4, 6: 8, 7: 9, 8: 10}
LULC_NAMES = {1: "cultivated land", 2: "forest", 3: "grassland", 4: "shrubland", 5: "water", 6: "wetlands",
              7: "tundra", 8: "artificial surface", 9: "bareland", 10: "snow and ice"}


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, dict[int, float]]:
    classes = sorted(set(np.unique(truth).tolist()))
    acc = float((pred == truth).mean())
    ious, recalls = {}, []
    for c in classes:
        inter = np.sum((pred == c) & (truth == c))
        union = np.sum((pred == c) | (truth == c))
        ious[c] = float(inter / union) if union else 0.0
        recalls.append(float(inter / np.sum(truth == c)))
    return acc, float(np.mean(list(ious.values()))), float(np.mean(recalls)), ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--scenes", type=int, nargs="+", default=[2, 3, 4])
    args = ap.parse_args()
    from geoseg import predict_scene

    with rasterio.open(args.data / "lulc.tif") as src:
        truth = src.read(1)
    keep = truth != 0
    lut = np.zeros(256, dtype=np.uint8)
    for dw, lulc in DW_TO_LULC.items():
        lut[dw] = lulc
    preds, truths = [], []
    print("| scene | pixel accuracy | mIoU (classes present) | mean class accuracy |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i in args.scenes:
            res = predict_scene(args.data / f"scene_{i}" / "image.tif", args.model, Path(tmp) / str(i),
                                progress=False)
            with rasterio.open(res.landcover) as src:
                pred = lut[src.read(1)]
            acc, miou, macc, _ = scores(pred[keep], truth[keep])
            print(f"| scene_{i} | {acc:.3f} | {miou:.3f} | {macc:.3f} |")
            preds.append(pred[keep])
            truths.append(truth[keep])
    p, t = np.concatenate(preds), np.concatenate(truths)
    acc, miou, macc, ious = scores(p, t)
    print(f"| pooled ({len(t):,} px) | {acc:.3f} | {miou:.3f} | {macc:.3f} |")
    print("pooled IoU: " + ", ".join(f"{LULC_NAMES[c]} {v:.3f} ({int(np.sum(t == c)):,} px)"
                                     for c, v in ious.items()))


if __name__ == "__main__":
    main()
