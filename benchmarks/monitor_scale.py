"""Benchmark: ``geoseg monitor run`` on one synthetic AOI the size of a Sentinel-2 tile (or smaller).

Builds, block by block (the generator holds one strip of rows at a time), three class rasters
(uint8, class 1 = ``trees`` via ``CLASS_<v>`` tags, nodata 255; EPSG:32633, 10 m) of SIZE x SIZE pixels:
mostly forest with non-forest fields, forest lost in 20 x 20 px cells on the second date, part of it
confirmed on the third (within ``confirm_days``), part of it seen as forest again, and some nodata
(clouds).  The AOI is a polygon a little inside the rasters.  Then it runs
``geoseg monitor run`` on it in a child process and reports its wall time and peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the child's own peak), its CPU time (user + system: the figure
to compare on a busy machine), and the outputs' sizes and alert count.

    .venv/bin/python benchmarks/monitor_scale.py                       # 10980 x 10980 (one S2 tile)
    .venv/bin/python benchmarks/monitor_scale.py --size 2048
    .venv/bin/python benchmarks/monitor_scale.py --size 2048 --code /path/to/other/checkout   # another version
    .venv/bin/python benchmarks/monitor_scale.py --size 2048 --json out.json --keep /tmp/mon

``--code`` runs the child with that checkout first on ``PYTHONPATH`` (to measure another version).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATES = ("20210601", "20210701", "20210801")
CELL = 20  # loss patches are made of CELL x CELL px cells
STRIP = 512


def _cells(rng_seed: int, n_cells: int, p: float) -> np.ndarray:
    """A (n_cells, n_cells) boolean field, the same for every strip (one small array)."""
    return np.random.default_rng(rng_seed).random((n_cells, n_cells)) < p


def build_scenes(folder: Path, size: int) -> list[Path]:
    """The three class rasters, written strip by strip."""
    import rasterio
    from affine import Affine

    n_cells = -(-size // CELL)
    field = _cells(1, n_cells, 0.15)  # non-forest fields
    lost = _cells(2, n_cells, 0.03) & ~field  # lost on the 2nd date
    again = _cells(3, n_cells, 0.3) & lost  # forest again on the 3rd (the others: still lost -> confirmed)
    cloud = _cells(4, n_cells, 0.02)  # nodata on the 3rd date
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "nodata": 255,
               "crs": "EPSG:32633", "transform": Affine(10.0, 0, 300_000.0, 0, -10.0, 5_000_000.0), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    paths = []
    for k, date in enumerate(DATES):
        path = folder / "scenes" / date / "landcover.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", **profile) as dst:
            dst.update_tags(1, CLASS_0="grass", CLASS_1="trees", CLASS_255="nodata")
            for r0 in range(0, size, STRIP):
                h = min(STRIP, size - r0)
                rows = np.arange(r0, r0 + h) // CELL
                cols = np.arange(size) // CELL

                def up(m: np.ndarray, rows: np.ndarray = rows, cols: np.ndarray = cols) -> np.ndarray:
                    return m[rows][:, cols]

                a = np.where(up(field), 0, 1).astype(np.uint8)
                if k >= 1:
                    loss = up(lost)
                    if k == 2:
                        loss &= ~up(again)
                    a[loss] = 0
                if k == 2:
                    a[up(cloud)] = 255
                dst.write(a[None], window=rasterio.windows.Window(0, r0, size, h))
        paths.append(path)
    return paths


def build_project(folder: Path, size: int) -> Path:
    import geopandas as gpd
    import yaml
    from shapely.geometry import Polygon

    build_scenes(folder, size)
    x0, y1, res, m = 300_000.0, 5_000_000.0, 10.0, 5  # the AOI: 5 px inside, one corner cut off
    x1, y0 = x0 + size * res, y1 - size * res
    poly = Polygon([(x0 + m * res, y0 + m * res), (x1 - m * res, y0 + m * res), (x1 - m * res, y1 - size * res / 4),
                    (x1 - size * res / 4, y1 - m * res), (x0 + m * res, y1 - m * res)])
    gpd.GeoDataFrame({"id": ["tile"]}, geometry=[poly], crs="EPSG:32633").to_file(folder / "aois.gpkg",
                                                                                  engine="pyogrio")
    cfg = {"aois": "aois.gpkg", "scenes": {"glob": "scenes/*/landcover.tif"}, "kind": "landcover",
           "forest": "trees", "confirm_days": 90, "min_area": "0.1ha", "output": "out"}
    (folder / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "monitor.yaml"


def run_child(config: Path, code: Path | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code or ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("GEOSEG_MONITOR_CRASH_AFTER", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from geoseg.cli import main; main()", "monitor", "run",
                           str(config)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = usage.ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"geoseg monitor run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(peak_kib / 1024, 1), "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10980, help="AOI raster side in pixels (default 10980)")
    ap.add_argument("--code", type=Path, default=None, help="checkout to run (default: this one)")
    ap.add_argument("--keep", type=Path, default=None, help="build the project here and keep it")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="geoseg-monitor-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "out", ignore_errors=True)
    try:
        t0 = time.perf_counter()
        config = build_project(folder, args.size)
        build_s = time.perf_counter() - t0
        res = run_child(config, args.code)
        aoi = res["summary"]["aois"][0]
        out = folder / "out" / "tile"
        fig = {"size": args.size, "megapixels": round(args.size**2 / 1e6, 1), "dates": len(DATES),
               "code": str(args.code or ROOT), "build_s": round(build_s, 1), "wall_s": res["wall_s"],
               "cpu_s": res["cpu_s"],
               "peak_rss_mib": res["peak_rss_mib"],
               "bytes_per_pixel": round(res["peak_rss_mib"] * 2**20 / args.size**2, 1),
               "alerts_total": aoi.get("alerts_total"), "alerts_high": aoi.get("alerts_high"),
               "alert_area_ha": aoi.get("alert_area_ha"),
               "files_mib": {p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(out.glob("*"))
                             if p.is_file() and p.suffix in (".tif", ".gpkg", ".geojson")}}
        print(json.dumps(fig, indent=1))
        if args.json:
            args.json.write_text(json.dumps(fig, indent=1))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
