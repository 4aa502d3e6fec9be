"""Benchmark: ``geoseg vectorize`` vs a single-pass GDAL polygonize of the whole raster.

Builds a realistic class raster by mosaicking the Dynamic World labels of
``shared/data/oscd-dw/*/*/dw_label.tif`` (random flips/rotations, 9 classes, nodata 255) up to
SIZE x SIZE pixels on a 10 m UTM grid, then runs, each in its own child process:

* ``geoseg``   - :func:`geoseg.vector.api.vectorize_raster` (blocks in a dask graph);
* ``baseline`` - read the whole band, ``rasterio.features.sieve`` (same minimum mapping unit),
  ``rasterio.features.shapes`` over the whole array, shapely, attributes, one GPKG write.

Both write a GeoPackage with the same attributes.  Peak memory is the PSS summed over the child
and its worker processes, sampled every 100 ms (or the largest single process's own peak, VmHWM, when that is larger).
The outputs are compared (count, area per class, and geometry equality on a sample of polygons
matched by their first pixel).

    .venv/bin/python benchmarks/vectorize.py                    # 10000 x 10000, 0.5 ha MMU
    .venv/bin/python benchmarks/vectorize.py --size 3000 --min-area 0
    .venv/bin/python benchmarks/vectorize.py --sizes 10000,20000,40000   # memory vs raster size
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "shared" / "data" / "oscd-dw"
if not DATA.exists():
    DATA = Path("/work/shared/data/oscd-dw")


def build_raster(path: Path, size: int, cell: int = 420, seed: int = 0) -> dict:
    import rasterio
    from affine import Affine

    labels = []
    names = {}
    for p in sorted(glob.glob(str(DATA / "*" / "*" / "dw_label.tif"))):
        with rasterio.open(p) as src:
            a = src.read(1)
            names.update({k: v for k, v in src.tags(1).items() if k.startswith("CLASS_")})
        if min(a.shape) >= cell:
            labels.append(a)
    if not labels:
        raise SystemExit(f"no Dynamic World labels of at least {cell} px under {DATA}")
    rng = np.random.default_rng(seed)
    n = -(-size // cell)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "nodata": 255,
               "crs": "EPSG:32633", "transform": Affine(10.0, 0, 400_000.0, 0, -10.0, 5_200_000.0), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "bigtiff": "if_safer"}
    with rasterio.open(path, "w", **profile) as dst:
        for i in range(n):
            strip = np.empty((cell, n * cell), np.uint8)
            for j in range(n):
                a = labels[rng.integers(len(labels))]
                r0 = rng.integers(0, a.shape[0] - cell + 1)
                c0 = rng.integers(0, a.shape[1] - cell + 1)
                t = np.rot90(a[r0:r0 + cell, c0:c0 + cell], k=int(rng.integers(4)))
                if rng.integers(2):
                    t = t[:, ::-1]
                strip[:, j * cell:(j + 1) * cell] = t
            h = min(cell, size - i * cell)
            dst.write(strip[:h, :size], 1, window=rasterio.windows.Window(0, i * cell, size, h))
        dst.update_tags(1, **names)
    return {"size": size, "cells": n * n, "source_labels": len(labels)}


def child_geoseg(args) -> dict:
    from geoseg.vector.api import vectorize_raster

    r = vectorize_raster(args.raster, args.out, min_area=args.min_area or None, block_size=args.block_size,
                         workers=args.workers, scheduler=args.scheduler, overwrite=True, progress=False)
    return {"features": r.features, "sieve_pixels": r.sieve_pixels, "blocks": r.blocks,
            "merged_polygons": r.extra["merged_polygons"], "seam_pieces": r.extra["seam_pieces"]}


def child_baseline(args) -> dict:
    import geopandas as gpd
    import pyogrio
    import rasterio
    import rasterio.features
    import shapely

    from geoseg.vector.api import parse_area
    from geoseg.vector.geometry import shapes_to_polygons, to_multipolygons

    with rasterio.open(args.raster) as src:
        a = src.read(1)
        valid = src.read_masks(1) > 0
        transform, crs = src.transform, src.crs
        names = {int(k[6:]): v for k, v in src.tags(1).items() if k.startswith("CLASS_") and k[6:].isdigit()}
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    pixels = 0
    if args.min_area:
        import math

        pixels = math.ceil(parse_area(args.min_area) / pixel_area - 1e-9)
        if pixels > 1:
            a = rasterio.features.sieve(a, pixels, mask=valid, connectivity=4)
    geoms, values = shapes_to_polygons(rasterio.features.shapes(a, mask=valid, connectivity=4, transform=transform))
    del a, valid
    geoms = to_multipolygons(geoms)
    area = shapely.area(geoms)
    gdf = gpd.GeoDataFrame({"class": values, "class_name": [names.get(int(v), f"class_{v}") for v in values],
                            "area_m2": area, "area_ha": area / 1e4, "perimeter_m": shapely.length(geoms)},
                           geometry=gpd.GeoSeries(geoms, crs=crs))
    if os.path.exists(args.out):
        os.unlink(args.out)
    pyogrio.write_dataframe(gdf, args.out, layer="landcover", driver="GPKG", geometry_type="MultiPolygon")
    return {"features": len(gdf), "sieve_pixels": pixels}


class TreeMemory:
    """Samples, from outside, the memory of a process and its worker processes (every 100 ms).

    ``ru_maxrss`` is per process: with worker processes the memory in use at once is their sum.
    Forked workers share their parent's pages copy-on-write and RSS counts such pages in every
    process, so the summed RSS errs on the high side; the summed PSS (proportional set size:
    each shared page split among the processes sharing it) is the physical memory in use.
    """

    def __init__(self, pid: int) -> None:
        import threading

        import psutil

        self.peak_rss_kb = self.peak_pss_kb = 0
        self._me = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.1):  # reading PSS walks the page tables: not too often
            rss = pss = 0
            try:
                procs = [self._me, *self._me.children(recursive=True)]
            except psutil.Error:  # the process has ended
                return
            for p in procs:
                try:
                    info = p.memory_full_info()
                except psutil.Error:  # a worker that just ended
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            self.peak_rss_kb = max(self.peak_rss_kb, rss // 1024)
            self.peak_pss_kb = max(self.peak_pss_kb, pss // 1024)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peak_rss_kb, self.peak_pss_kb


def _own_peak_kb(ru_maxrss_kb: int) -> int:
    """This process's peak resident memory in KiB (VmHWM where /proc has it, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return ru_maxrss_kb


def run_child(variant: str, args, raster: Path, out: Path, scheduler: str = "threads") -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--raster", str(raster), "--out", str(out),
           "--min-area", args.min_area, "--block-size", str(args.block_size), "--workers", str(args.workers),
           "--scheduler", scheduler]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree = TreeMemory(proc.pid)  # sampled from here, so the run itself has no extra thread
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    rss_kb, pss_kb = tree.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_s"] = wall
    res["process_peak_mb"] = res["peak_rss_mb"]
    res["summed_rss_mb"] = rss_kb / 1024
    # the reported peak: the summed PSS over the process tree, or the largest single process's
    # own peak (VmHWM / ru_maxrss) when that is higher (a peak between two samples)
    res["peak_rss_mb"] = max(res["peak_rss_mb"], pss_kb / 1024)
    return res


def compare(a_path: Path, b_path: Path, width: int, sample: int = 3000) -> dict:
    import pyogrio
    import shapely

    a = pyogrio.read_dataframe(a_path)
    b = pyogrio.read_dataframe(b_path)
    out = {"features_equal": len(a) == len(b), "invalid_geoseg": int((~shapely.is_valid(a.geometry.values)).sum())}
    sa = a.groupby("class")["area_m2"].sum()
    sb = b.groupby("class")["area_m2"].sum()
    out["class_area_max_rel_diff"] = float((abs(sa - sb) / sb).max())

    def first_pixel(geoms):  # id of the first pixel (row * width + col) from the 10 m grid
        ids = []
        for g in geoms:
            xy = shapely.get_coordinates(g)
            top = xy[:, 1].max()
            left = xy[xy[:, 1] == top, 0].min()
            ids.append(int(round((5_200_000.0 - top) / 10)) * width + int(round((left - 400_000.0) / 10)))
        return np.array(ids)

    bi = first_pixel(b.geometry.values)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(b), size=min(sample, len(b)), replace=False)
    ai = dict(zip(a["id"], a.geometry.values))
    eq = [ai.get(bi[k]) is not None and shapely.equals(ai[bi[k]], b.geometry.values[k]) for k in pick]
    out["sampled_geometries_equal"] = f"{sum(eq)}/{len(eq)}"
    return out


def largest_polygon(path: Path) -> tuple[int, float]:
    """(vertices of the largest output polygon, its share of all vertices)."""
    import pyogrio
    import shapely

    n = shapely.get_num_coordinates(pyogrio.read_dataframe(path, columns=[]).geometry.values)
    return int(n.max()), float(n.max() / n.sum())


def run_size(args, work: Path, size: int) -> dict:
    raster = work / f"classes_{size}.tif"
    raster_mib = size ** 2 / 2 ** 20
    t0 = time.perf_counter()
    meta = build_raster(raster, size)
    print(f"\nraster: {size} x {size} uint8 ({size ** 2 / 1e6:.0f} Mpx, {raster_mib:.0f} MiB in memory), "
          f"{meta['cells']} cells from {meta['source_labels']} Dynamic World labels, built in "
          f"{time.perf_counter() - t0:.1f} s")
    g = run_child("geoseg", args, raster, work / "geoseg.gpkg", args.scheduler)
    largest, share = largest_polygon(work / "geoseg.gpkg")
    row = {"size": size, "raster_mib": raster_mib, "geoseg": g, "largest_vertices": largest, "largest_share": share}
    runs = [("geoseg vectorize", g)]
    if size <= args.baseline_max:
        row["baseline"] = b = run_child("baseline", args, raster, work / "baseline.gpkg")
        runs.append(("single-pass GDAL", b))
    for name, r in runs:
        print(f"{name:<18} {r['work_s']:8.1f} s work {r['wall_s']:8.1f} s wall {r['cpu_s']:8.1f} s CPU "
              f"{r['peak_rss_mb']:8.0f} MiB peak memory {r['features']:>9} polygons")
    print(f"geoseg details: {json.dumps({k: v for k, v in g.items() if k not in ('work_s', 'wall_s', 'cpu_s')})}")
    print(f"largest polygon: {largest} vertices, {share:.0%} of all output vertices (it is built whole in memory)")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs: other work shared the cores, so wall "
              "times are pessimistic; compare CPU seconds")
    ratio = f"geoseg peak memory = {g['peak_rss_mb'] / raster_mib:.2f}x the raster's in-memory size"
    if "baseline" in row:
        b = row["baseline"]
        print(f"ratio geoseg/baseline: time {g['work_s'] / b['work_s']:.2f}x, CPU {g['cpu_s'] / b['cpu_s']:.2f}x, "
              f"peak memory {g['peak_rss_mb'] / b['peak_rss_mb']:.2f}x; {ratio}")
        print(f"equal output: {json.dumps(compare(work / 'geoseg.gpkg', work / 'baseline.gpkg', size))}")
    else:
        print(f"{ratio} (baseline skipped above --baseline-max {args.baseline_max})")
    for f in (raster, work / "geoseg.gpkg", work / "baseline.gpkg"):
        if not args.workdir and f.exists():
            f.unlink()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--sizes", help="comma-separated sizes for a scaling run, e.g. 10000,20000,40000")
    ap.add_argument("--baseline-max", type=int, default=20_000,
                    help="skip the single-pass baseline above this size (it needs ~12x the raster in memory)")
    ap.add_argument("--min-area", default="0.5ha", help="minimum mapping unit for both variants ('0' = none)")
    ap.add_argument("--block-size", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scheduler", default="processes")
    ap.add_argument("--workdir", help="folder for the raster and outputs (default: a temporary folder)")
    ap.add_argument("--child", choices=["geoseg", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--raster", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.min_area in ("0", "none", ""):
        args.min_area = ""

    if args.child:
        import warnings

        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = child_geoseg(args) if args.child == "geoseg" else child_baseline(args)
        res["work_s"] = time.perf_counter() - t0
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        # this process's own peak: VmHWM, not ru_maxrss, which after fork+exec keeps the peak of the
        # process that started it (Linux keeps the pre-exec maximum): here, this script's parent
        # process after building rasters and comparing outputs.  Forked workers' ru_maxrss is their own.
        res["peak_rss_mb"] = max(_own_peak_kb(me.ru_maxrss), kids.ru_maxrss) / 1024
        res["cpu_s"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime  # imports included
        print(json.dumps(res))
        return

    tmp = None
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="geoseg-bench-")
        work = Path(tmp.name)
    sizes = [int(v) for v in str(args.sizes or args.size).split(",")]
    print(f"MMU: {args.min_area or 'none'}; geoseg: block {args.block_size}, {args.workers} workers, "
          f"{args.scheduler}; CPUs: {os.cpu_count()}; peak memory = summed PSS of the process tree")
    table = []
    for size in sizes:
        table.append(run_size(args, work, size))
    if len(table) > 1:
        print("\nsize      raster MiB  geoseg s  geoseg MiB  x raster  largest polygon (share of vertices)  "
              "GDAL s  GDAL MiB")
        for row in table:
            g, b = row["geoseg"], row.get("baseline")
            print(f"{row['size']:>6}²  {row['raster_mib']:>10.0f}  {g['work_s']:>8.1f}  {g['peak_rss_mb']:>10.0f}  "
                  f"{g['peak_rss_mb'] / row['raster_mib']:>8.2f}  {row['largest_vertices']:>12} "
                  f"({row['largest_share']:.0%})"
                  f"{'':>18}" + (f"{b['work_s']:>7.1f}  {b['peak_rss_mb']:>8.0f}" if b else "      -         -"))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
