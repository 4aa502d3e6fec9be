#!/usr/bin/env python
"""One scene on threads vs a LocalCluster of worker processes vs ``dask scheduler`` + ``dask worker`` (tcp://
on 127.0.0.1), and where a cluster's time goes.

The scene is ``benchmarks/predict_throughput.py``'s mosaic of real Sentinel-2 crops, the model the shipped default.
Every configuration first predicts a 1024^2 scene (warm-up: each worker process loads/compiles its model once, as
a long-lived cluster does), then the measured scene ``--repeats`` times, interleaved.  Prints per configuration the
seconds of ``predict_scene`` (planning, graph, COG build), its ratio to threads, and for the clusters the task
stream summed by action (compute, transfer, deserialize) and task kind, with the bytes of pieces that travel
between workers (the batch results' arrays).  Byte identity of the COGs with the threaded run is checked.

    python benchmarks/schedulers.py                        # 2048^2, 2 workers x 1 thread
    python benchmarks/schedulers.py --size 4096 --workers 2 --threads 1 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import load, make_scene  # noqa: E402


@contextlib.contextmanager
def tcp_cluster(work: Path, workers: int, threads: int) -> Iterator[str]:
    """``dask scheduler`` and ``dask worker`` subprocesses on 127.0.0.1; yields the scheduler's address."""
    sched_file = work / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(sched_file)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for _ in range(300):
            if sched_file.exists():
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers",
                                       str(workers), "--nthreads", str(threads), "--no-dashboard",
                                       "--host", "127.0.0.1"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address) as c:
            c.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=60)


def stream_summary(records: list[dict]) -> dict[str, float]:
    """Seconds per (task kind, action) of a task stream."""
    out: dict[str, float] = defaultdict(float)
    for rec in records:
        kind = str(rec["key"]).rsplit("-", 1)[0].split("-")[0]
        for ss in rec.get("startstops", ()):
            out[f"{kind}:{ss['action']}"] += ss["stop"] - ss["start"]
    return dict(sorted(out.items()))


def pieces_bytes(scene: Path) -> tuple[int, int]:
    """(bytes of all pieces the batch tasks produce, number of batches): what travels between workers."""
    from geoseg.io.grid import batches
    from geoseg.predict.api import _plan, _spec
    from geoseg.predict.tasks import predict_tiles

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = _plan(scene, "default", Path(tempfile.gettempdir()) / "unused", bands=None, tile_size=None,
                    overlap=None, blend="cosine", batch_size=None, block_size=1024, workers=None, scheduler="threads",
                    device="auto", amp=None, probabilities=False, confidence=False, allow_ungeoreferenced=False,
                    tta="none", vector=None, vector_options=None, acquired=None)
    spec = _spec(job, "bytes")
    bl = batches(list(job.plan), spec.batch_size)
    tb = predict_tiles(spec, bl[len(bl) // 2])  # one inner batch, scaled to all
    per = sum(p.probs.nbytes + p.weight.nbytes for ps in tb.pieces.values() for p in ps)
    return per * len(bl), len(bl)


def run(scene: Path, out: Path, **kw) -> tuple[float, dict]:
    from geoseg import predict_scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = predict_scene(scene, "default", out, overwrite=True, profile=True, **kw)
    return r.seconds, r.extra.get("profile", {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2, help="worker processes of each cluster")
    ap.add_argument("--threads", type=int, default=1, help="threads per worker process")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    import distributed

    with tempfile.TemporaryDirectory(prefix="geoseg-sched-") as tmp:
        work = Path(tmp)
        scene, small = work / "scene.tif", work / "small.tif"
        make_scene(scene, args.size)
        make_scene(small, 1024)  # 5 batches: every worker process loads its model before the measured runs
        total, n_batches = pieces_bytes(scene)
        print(f"scene {args.size}^2; clusters: {args.workers} worker processes x {args.threads} threads; "
              f"pieces of {n_batches} batches: {total / 2**20:.0f} MiB; load {load()}", flush=True)
        times: dict[str, list[float]] = defaultdict(list)
        streams: dict[str, dict] = {}
        with contextlib.ExitStack() as stack:
            t0 = time.perf_counter()
            local = stack.enter_context(distributed.LocalCluster(
                n_workers=args.workers, threads_per_worker=args.threads, processes=True, dashboard_address=None))
            lc_client = stack.enter_context(distributed.Client(local))
            print(f"LocalCluster start: {time.perf_counter() - t0:.1f} s", flush=True)
            t0 = time.perf_counter()
            address = stack.enter_context(tcp_cluster(work, args.workers, args.threads))
            tcp_client = stack.enter_context(distributed.Client(address))
            print(f"dask scheduler + dask worker start: {time.perf_counter() - t0:.1f} s", flush=True)
            configs: dict[str, dict] = {"threads": {}, "LocalCluster(processes)": {"client": lc_client},
                                        "tcp://": {"scheduler": address}}
            for kw in configs.values():  # warm-up
                run(small, work / "warm", **kw)
            for rep in range(args.repeats):
                for name, kw in configs.items():
                    c = kw.get("client") or (tcp_client if "scheduler" in kw else None)
                    with (distributed.get_task_stream(c) if c is not None else contextlib.nullcontext()) as ts:
                        s, prof = run(scene, work / name.split("(")[0].strip(":/"), **kw)
                    times[name].append(s)
                    if ts is not None:
                        streams[name] = stream_summary(ts.data)
                    print(f"  {rep + 1}: {name:26s} {s:7.1f} s   load {load()}", flush=True)
        ref = statistics.median(times["threads"])
        print("\nconfiguration                 median s   / threads")
        for name, ts in times.items():
            print(f"{name:28s} {statistics.median(ts):8.1f}   {statistics.median(ts) / ref:6.2f}")
        for name, summ in streams.items():
            print(f"\n{name} task stream (seconds summed over tasks):")
            for k, v in summ.items():
                print(f"  {k:28s} {v:8.2f}")
        same = all((work / d / "landcover.tif").read_bytes() == (work / "threads" / "landcover.tif").read_bytes()
                   for d in ("LocalCluster", "tcp"))
        print(f"\nlandcover.tif byte-identical to threads on both clusters: {same}")


if __name__ == "__main__":
    main()
