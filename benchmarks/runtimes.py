"""Bare-forward throughput, agreement with torch eager and peak RSS of each runtime (a script, not a test).

Each (runtime, precision) runs in its own process, so its peak RSS (``ru_maxrss``) and whether it loaded
torch are its own; the whole measurement is repeated ``--rounds`` times and medians are reported.

    PYTHONPATH=$PWD python benchmarks/runtimes.py [--model default] [--tile 512] [--batch-sizes 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def child(args: argparse.Namespace) -> None:
    from geoseg.model.bench import run_bench

    runtime, precision = args.child.split(":")
    ref_file = Path(args.ref)
    ref = np.load(ref_file) if ref_file.exists() else None  # written by the torch child, which runs first
    result = run_bench(args.model, tuple(int(b) for b in args.batch_sizes.split(",")), args.tile, args.repeats,
                       args.threads, only=[(runtime, precision)], reference=ref)
    if "reference" in result:
        np.save(ref_file, result.pop("reference"))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["torch_loaded"] = "torch" in sys.modules
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch-sizes", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards per case in one round")
    ap.add_argument("--rounds", type=int, default=3, help="whole measurement repeated; medians reported")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    from geoseg.model.bench import variants

    runs: dict[tuple[str, str, int], list[dict]] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    torch_loaded: dict[tuple[str, str], bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            ref = Path(tmp) / "ref.npy"
            ref.unlink(missing_ok=True)
            for runtime, precision in variants():
                cmd = [sys.executable, __file__, "--child", f"{runtime}:{precision}", "--model", args.model,
                       "--tile", str(args.tile), "--batch-sizes", args.batch_sizes, "--repeats", str(args.repeats),
                       "--ref", str(ref)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                rss.setdefault((runtime, precision), []).append(res["peak_rss_mb"])
                torch_loaded[(runtime, precision)] = res["torch_loaded"]
                for r in res["rows"]:
                    runs.setdefault((runtime, precision, r["batch"]), []).append(r)
    base = {k[2]: statistics.median(r["mpx_s"] for r in v) for k, v in runs.items() if k[0] == "torch"}
    print(f"model {args.model}, tiles {args.tile}², medians of {args.rounds} rounds × {args.repeats} forwards; "
          f"agreement with torch eager on {res['input']}")
    print(f"{'runtime':<20} {'prec':<5} {'batch':>5} {'Mpx/s':>7} {'x torch':>7} {'classes=eager':>13} "
          f"{'max |dp|':>9} {'peak RSS MB':>11} {'torch?':>6}")
    for (runtime, precision, batch), rows in runs.items():
        mpx = statistics.median(r["mpx_s"] for r in rows)
        agree = float(np.median([r["agreement"] for r in rows]))
        diff = max(r["max_prob_diff"] for r in rows)
        print(f"{runtime:<20} {precision:<5} {batch:>5} {mpx:>7.2f} {mpx / base[batch]:>7.2f} {100 * agree:>12.3f}% "
              f"{diff:>9.2e} {statistics.median(rss[(runtime, precision)]):>11.0f} "
              f"{'yes' if torch_loaded[(runtime, precision)] else 'no':>6}")


if __name__ == "__main__":
    main()
