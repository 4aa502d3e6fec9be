#!/usr/bin/env python
"""Inference speed of trained model packages, side by side, in one run.

For each package: parameters, weight file size, and the bare forward throughput of
:class:`geoseg.model.runtime.Predictor` on random normalised 512 x 512 tiles (batch 2, the CPU
default of ``geoseg predict``), measured in interleaved rounds so that load changes on a shared
machine hit every model alike.  Accuracy is not measured here: use
``geoseg evaluate --model PKG --data workflows/train_default.yaml`` (the validation cities).

    .venv/bin/python benchmarks/model_compare.py geoseg/models/default /tmp/other_pkg
    .venv/bin/python benchmarks/model_compare.py A B --rounds 5 --batches 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("packages", nargs="+", help="model package folders/files (or 'default')")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--batches", type=int, default=3, help="timed forward batches per model and round")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()

    import torch

    from geoseg.model.package import load_model, resolve
    from geoseg.model.runtime import Predictor, configure_threads

    configure_threads(args.threads)
    models = []
    for p in args.packages:
        path = resolve(p)
        card, net = load_model(path)
        pred = Predictor(card, net, torch.device("cpu"), amp=False)
        n_params = sum(t.numel() for t in net.parameters())
        weights = path / "model.safetensors" if path.is_dir() else path
        x = np.random.default_rng(0).standard_normal(
            (args.batch, len(pred.card.bands), args.tile, args.tile)).astype(np.float32)
        pred(x)  # warm-up (first-call allocations, kernel selection)
        models.append({"name": p, "card": pred.card, "pred": pred, "x": x, "params": n_params,
                       "mb": weights.stat().st_size / 2**20, "seconds": 0.0, "pixels": 0})
    for _ in range(args.rounds):
        for m in models:
            t = time.perf_counter()
            for _ in range(args.batches):
                m["pred"](m["x"])
            m["seconds"] += time.perf_counter() - t
            m["pixels"] += args.batches * args.batch * args.tile * args.tile
    load = os.getloadavg()[0]
    print(f"CPU, {args.threads} torch threads, {args.tile}x{args.tile} tiles, batch {args.batch}, "
          f"{args.rounds} rounds x {args.batches} batches; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'model':<44} {'arch/encoder':<26} {'params':>8} {'weights':>8} {'forward':>12}")
    base = None
    for m in models:
        rate = m["pixels"] / m["seconds"]
        base = base or rate
        c = m["card"]
        print(f"{c.id:<44} {c.architecture + '/' + c.encoder:<26} {m['params'] / 1e6:7.1f}M {m['mb']:7.1f}M "
              f"{rate / 1e6:8.3f} Mpx/s  (x{rate / base:.2f})")


if __name__ == "__main__":
    main()
