#!/usr/bin/env python
"""Resume inside a scene: an uninterrupted run vs a run SIGKILLed at ~60 % of its blocks and its rerun.

Each run is a child process (imports, model load and COG build included, as for a user's rerun), on a mosaic of
real Sentinel-2 crops (``benchmarks/predict_throughput.py``'s scene) and the shipped default model.  Prints the
full run's seconds, the killed run's, the rerun's and its ratio to the full run (the issue's bar: <= 0.5), and
whether the rerun's COGs are byte-identical to the full run's.  A warm-up run first exports/caches the runtime's
graph so that no measured run pays for it.

    python benchmarks/resume.py                       # 2048^2, blocks of 512 (16), killed after 10 blocks
    python benchmarks/resume.py --size 4096 --block-size 1024 --kill-at 0.6
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import load, make_scene  # noqa: E402

CHILD = """
import os, signal, sys, time, warnings
warnings.simplefilter("ignore")
import geoseg.predict.graph as graph
from geoseg import predict_scene
scene, out, block_size, stop_after, products = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
original = graph.blend_and_write
def blend_and_write(spec, block, *parts):
    result = original(spec, block, *parts)
    if stop_after and sum(f.startswith("block-") for f in os.listdir(spec.journal_dir)) >= stop_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
graph.blend_and_write = blend_and_write
r = predict_scene(scene, "default", out, block_size=block_size, probabilities="p" in products,
                  confidence="c" in products, overwrite=True)
print("RESUMED", r.extra["resumed_blocks"])
"""


def child(scene: Path, out: Path, block_size: int, stop_after: int, products: str) -> tuple[float, int, str]:
    """(wall seconds, return code, its stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, str(scene), str(out), str(block_size), str(stop_after),
                        products], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if p.returncode not in (0, -9):
        sys.exit(p.stderr[-3000:])
    return time.perf_counter() - t0, p.returncode, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--kill-at", type=float, default=0.6, help="fraction of the blocks finished when killed")
    ap.add_argument("--products", default="pc", help="p: probabilities, c: confidence, '': the class map only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="geoseg-resume-") as tmp:
        work = Path(tmp)
        scene = work / "scene.tif"
        make_scene(scene, args.size)
        small = work / "small.tif"
        make_scene(small, 512)
        child(small, work / "warm", args.block_size, 0, args.products)  # graph export/caches, page cache
        n_blocks = (-(-args.size // args.block_size)) ** 2
        stop = max(1, round(n_blocks * args.kill_at))
        print(f"scene {args.size}^2, {n_blocks} blocks of {args.block_size}, products landcover+{args.products!r}; "
              f"load {load()}", flush=True)
        full, _, _ = child(scene, work / "full", args.block_size, 0, args.products)
        print(f"full run:       {full:7.1f} s   load {load()}", flush=True)
        killed, rc, _ = child(scene, work / "resumed", args.block_size, stop, args.products)
        print(f"killed run:     {killed:7.1f} s   SIGKILL after {stop}/{n_blocks} blocks (rc {rc})", flush=True)
        rerun, _, out = child(scene, work / "resumed", args.block_size, 0, args.products)
        resumed = out.split("RESUMED")[-1].strip()
        print(f"rerun:          {rerun:7.1f} s   {resumed} blocks reused; rerun / full = {rerun / full:.2f}   "
              f"load {load()}")
        names = ["landcover.tif"] + (["probabilities.tif"] if "p" in args.products else []) + (
            ["confidence.tif"] if "c" in args.products else [])
        same = all((work / "full" / n).read_bytes() == (work / "resumed" / n).read_bytes() for n in names)
        print(f"byte-identical to the full run: {same} ({', '.join(names)})")


if __name__ == "__main__":
    main()
