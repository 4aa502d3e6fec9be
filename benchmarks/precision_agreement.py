#!/usr/bin/env python
"""bf16 against f32: agreement of the class maps of real scenes, and the wall time, per runtime (a script).

Runs ``predict_scene`` on the shipped Hong Kong sample and a few OSCD cities of ``shared/data/oscd-dw``
(9-band Sentinel-2 L1C DN) with the shipped default model, at f32 and at bf16, on OpenVINO and on torch
(bf16 only where this CPU has native BF16: :func:`geoseg.model.backends.cpu_has_bf16`), and prints per scene
and in total the share of pixels whose class at bf16 equals the class at f32 of the same runtime, and the
wall time of each variant.  The machine may be shared: the load average is printed; read the ratios.

    PYTHONPATH=$PWD python benchmarks/precision_agreement.py [--cities abudhabi,cupertino,...] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tiles" / "hongkong_20160927" / "image.tif"
DATA = ROOT / "shared" / "data" / "oscd-dw"
if not DATA.exists():
    DATA = Path("/work/shared/data/oscd-dw")
CITIES = "abudhabi/20160120,cupertino/20180326,mumbai/20151130,milano/20161228,lasvegas/20150820"


def scenes(cities: str) -> list[Path]:
    out = [SAMPLE] if SAMPLE.exists() else []
    for c in cities.split(","):
        hits = sorted((DATA / c).glob("image.tif")) or sorted((DATA / c).glob("*/image.tif"))
        out += hits[:1]
    return out


def main() -> None:
    from geoseg import predict_scene
    from geoseg.model.backends import cpu_has_bf16, installed_runtimes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--cities", default=CITIES, help="city[/date] of shared/data/oscd-dw, comma-separated")
    ap.add_argument("--runtimes", default="openvino,torch")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--rounds", type=int, default=1, help="timing repeated; medians reported")
    args = ap.parse_args()
    if not cpu_has_bf16():
        raise SystemExit("this CPU has no native BF16 (avx512_bf16 / amx_bf16): nothing to compare")
    runtimes = [r for r in args.runtimes.split(",") if r in installed_runtimes()]
    files = scenes(args.cities)
    px = {}
    for f in files:
        with rasterio.open(f) as src:
            px[f] = src.width * src.height
    print(f"load average {os.getloadavg()}; {len(files)} scenes, {sum(px.values()) / 1e6:.2f} Mpx; "
          f"model {args.model}; batch {args.batch_size or 'default'}")
    warnings.simplefilter("ignore")
    maps: dict[tuple[str, str], dict[Path, np.ndarray]] = {}
    secs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for runtime in runtimes:
                for precision in ("f32", "bf16"):
                    key = (runtime, precision)
                    t0 = time.perf_counter()
                    for i, f in enumerate(files):
                        out = Path(tmp) / f"{rnd}-{runtime}-{precision}-{i}"
                        r = predict_scene(f, args.model, out, runtime=runtime, precision=precision,
                                          batch_size=args.batch_size, progress=False)
                        with rasterio.open(r.landcover) as src:
                            maps.setdefault(key, {})[f] = src.read(1)
                    secs.setdefault(key, []).append(time.perf_counter() - t0)
            print(f"round {rnd + 1}: load average {os.getloadavg()}")
    total = sum(px.values())
    print(f"{'scene':<34} " + " ".join(f"{r + ' bf16=f32':>18}" for r in runtimes)
          + (f" {'ov f32 = torch f32':>18}" if {"openvino", "torch"} <= set(runtimes) else ""))
    agree: dict[str, int] = dict.fromkeys(runtimes, 0)
    cross = 0
    for f in files:
        cells = []
        for r in runtimes:
            same = int((maps[(r, "f32")][f] == maps[(r, "bf16")][f]).sum())
            agree[r] += same
            cells.append(f"{100 * same / px[f]:>17.3f}%")
        if {"openvino", "torch"} <= set(runtimes):
            same = int((maps[("openvino", "f32")][f] == maps[("torch", "f32")][f]).sum())
            cross += same
            cells.append(f"{100 * same / px[f]:>17.3f}%")
        print(f"{str(f.relative_to(f.parents[2])):<34} " + " ".join(cells))
    print(f"{'all (' + format(total / 1e6, '.2f') + ' Mpx)':<34} "
          + " ".join(f"{100 * agree[r] / total:>17.3f}%" for r in runtimes)
          + (f" {100 * cross / total:>17.3f}%" if {"openvino", "torch"} <= set(runtimes) else ""))
    for r in runtimes:
        f32, bf16 = statistics.median(secs[(r, "f32")]), statistics.median(secs[(r, "bf16")])
        rounds = {p: [round(s, 1) for s in secs[(r, p)]] for p in ("f32", "bf16")}
        print(f"{r}: wall f32 {f32:.1f} s, bf16 {bf16:.1f} s, bf16 x f32 speed {f32 / bf16:.2f} "
              f"(rounds f32 {rounds['f32']}, bf16 {rounds['bf16']})")


if __name__ == "__main__":
    main()
