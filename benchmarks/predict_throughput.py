#!/usr/bin/env python
"""Prediction throughput and memory: bare model forward vs end-to-end ``geoseg predict``.

Prints, in one run, on the same scene texture and model:

* bare model forward throughput (pixels/s on pre-loaded, pre-normalised batches);
* end-to-end ``predict_scene`` throughput: scene pixels/s and computed pixels/s
  (tiles x tile area, i.e. counting overlap), and its ratio to the bare model;
* peak RSS of each end-to-end run, for two scene sizes, to show memory is flat.

Each measurement runs in its own child process, so peak RSS is that run's alone.
Scenes are made by mirroring the shipped Sentinel-2 sample (bands B2,B3,B4,B8)
up to the requested size, written block by block (never a full-scene array).

    python benchmarks/predict_throughput.py                       # 2048^2 and 10240^2, Unet/resnet18
    python benchmarks/predict_throughput.py --sizes 1024,4096 --arch FPN
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tiles" / "hongkong_20160927" / "image.tif"
BANDS = ("B2", "B3", "B4", "B8")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_scene(path: Path, size: int) -> None:
    """Mirror-tile the sample's B2,B3,B4,B8 into a size x size uint16 GeoTIFF, written by blocks."""
    import rasterio
    from affine import Affine

    with rasterio.open(SAMPLE) as src:
        idx = [src.descriptions.index(b) + 1 for b in BANDS]
        base = src.read(idx)
    tile = np.concatenate([base, base[:, :, ::-1]], axis=2)
    tile = np.concatenate([tile, tile[:, ::-1, :]], axis=1)  # seamless mirrored period
    th, tw = tile.shape[1:]
    profile = dict(driver="GTiff", width=size, height=size, count=4, dtype="uint16", nodata=0,
                   crs="EPSG:32650", transform=Affine(10, 0, 200_000, 0, -10, 2_500_000), tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", zlevel=1, predictor=2,
                   bigtiff="yes")
    step = 1024
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = BANDS
        for r in range(0, size, step):
            h = min(step, size - r)
            rows = np.arange(r, r + h) % th
            for c in range(0, size, step):
                w = min(step, size - c)
                cols = np.arange(c, c + w) % tw
                block = tile[:, rows][:, :, cols]
                dst.write(block, window=rasterio.windows.Window(c, r, w, h))


def make_model(path: Path, arch: str, encoder: str, tile: int, overlap: int) -> None:
    import torch

    from geoseg.model.card import ModelCard, Normalization, parse_classes
    from geoseg.model.package import save_package
    from geoseg.model.registry import build_model, output_stride
    from geoseg.model.schemes import DYNAMIC_WORLD

    card = ModelCard(id=f"bench-{arch}-{encoder}", architecture=arch, encoder=encoder, bands=BANDS,
                     classes=parse_classes(DYNAMIC_WORLD),
                     normalization=Normalization("meanstd", (1200.0,) * 4, (800.0,) * 4),
                     tile_size=tile, overlap=overlap, output_stride=output_stride(arch))
    torch.manual_seed(0)
    save_package(card, build_model(arch, encoder, 4, 9), path, overwrite=True)


def child_bare(model: str, scene: str, batch: int, n_batches: int, threads: int) -> dict:
    """Forward passes on pre-loaded normalised batches read from the scene."""
    import rasterio
    import torch

    from geoseg.model.package import load_model
    from geoseg.model.runtime import Predictor

    torch.set_num_threads(threads)
    card, net = load_model(model)
    t = card.tile_size
    with rasterio.open(scene) as src:
        span_r, span_c = max(1, src.height - t), max(1, src.width - t)
        arrays = [src.read(window=rasterio.windows.Window((i * 389) % span_c, (i * 211) % span_r, t, t))
                  .astype(np.float32) for i in range(batch * n_batches)]
    x = np.stack([card.normalization.apply(a) for a in arrays]).reshape(n_batches, batch, 4, t, t)
    pred = Predictor(card, net, torch.device("cpu"))
    pred(x[0])  # warm-up
    t0 = time.perf_counter()
    for b in x:
        pred(b)
    dt = time.perf_counter() - t0
    return {"pixels_per_s": n_batches * batch * t * t / dt, "seconds": dt, "threads": threads}


def child_predict(model: str, scene: str, out: str, workers: int | None, batch: int) -> dict:
    import dask  # noqa: F401  - imports are not part of the measured run (the bare model excludes them too)
    import torch  # noqa: F401

    from geoseg import predict_scene

    t0 = time.perf_counter()
    r = predict_scene(scene, model, out, overwrite=True, workers=workers, batch_size=batch, progress=False)
    dt = time.perf_counter() - t0
    import json as _json

    rec = _json.loads(Path(r.run_record).read_text())
    scene_px = rec["grid"]["width"] * rec["grid"]["height"]
    return {"seconds": dt, "scene_pixels": scene_px, "computed_pixels": rec["computed_pixels"],
            "tiles": rec["tiles"], "workers": rec["options"]["workers"],
            "torch_threads": rec["options"]["torch_threads"]}


def run_child(*args: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"child {args[0]} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2048,10240", help="scene sizes (square), comma separated")
    ap.add_argument("--arch", default="Unet")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2, help="tiles per forward, for both measurements")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--workdir", default=None, help="where scenes/outputs go (default: a temp dir)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        kind, *rest = a.child
        if kind == "bare":
            res = child_bare(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]))
        else:
            res = child_predict(rest[0], rest[1], rest[2], None if rest[3] == "auto" else int(rest[3]), int(rest[4]))
        res["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(res))
        return

    sys.path.insert(0, str(ROOT))
    work = Path(a.workdir or tempfile.mkdtemp(prefix="geoseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    make_model(model, a.arch, a.encoder, a.tile, a.overlap)
    sizes = [int(s) for s in a.sizes.split(",")]
    cores = len(os.sched_getaffinity(0))
    print(f"model {a.arch}/{a.encoder}, tile {a.tile}, overlap {a.overlap}, batch {a.batch}, {cores} cores")
    rows = []
    for size in sizes:
        scene = work / f"scene_{size}.tif"
        if not scene.exists():
            t0 = time.perf_counter()
            make_scene(scene, size)
            print(f"made {scene.name} ({size}x{size}x4 uint16) in {time.perf_counter() - t0:.0f} s")
        bare = run_child("bare", str(model), str(scene), str(a.batch), "3", str(cores))
        e2e = run_child("predict", str(model), str(scene), str(work / f"out_{size}"),
                        "auto" if a.workers is None else str(a.workers), str(a.batch))
        scene_pps = e2e["scene_pixels"] / e2e["seconds"]
        comp_pps = e2e["computed_pixels"] / e2e["seconds"]
        rows.append((size, bare, e2e, scene_pps, comp_pps))
        print(f"\n== {size} x {size} ({e2e['tiles']} tiles, "
              f"workers {e2e['workers']} x {e2e['torch_threads']} torch threads)")
        print(f"bare model forward      {bare['pixels_per_s'] / 1e6:8.3f} Mpx/s  "
              f"({cores} torch threads, peak RSS {bare['peak_rss_mb']:.0f} MB)")
        print(f"end-to-end, scene px    {scene_pps / 1e6:8.3f} Mpx/s  ({e2e['seconds']:.1f} s)")
        print(f"end-to-end, computed px {comp_pps / 1e6:8.3f} Mpx/s  "
              f"(overlap factor {e2e['computed_pixels'] / e2e['scene_pixels']:.3f})")
        print(f"ratio end-to-end / bare {comp_pps / bare['pixels_per_s']:8.3f}  (goal >= 0.85)")
        print(f"peak RSS predict        {e2e['peak_rss_mb']:8.0f} MB")
    if len(rows) > 1:
        (s0, _, e0, *_), (s1, _, e1, *_) = rows[0], rows[-1]
        print(f"\nscene area x{(s1 / s0) ** 2:.1f}: peak RSS {e0['peak_rss_mb']:.0f} MB -> {e1['peak_rss_mb']:.0f} MB "
              f"(x{e1['peak_rss_mb'] / e0['peak_rss_mb']:.2f})")


if __name__ == "__main__":
    main()
