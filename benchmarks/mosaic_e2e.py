#!/usr/bin/env python
"""``geoseg mosaic`` end to end on a real city (issue 16's done-when figure: a 3-scene ItemCollection in 2 CRSs
-> per-scene products + mosaic).

A shared OSCD city (default ``bordeaux``, Sentinel-2 L1C, EPSG:4326 in ``../shared/data/oscd-dw``) is
reprojected once onto its UTM zone at 10 m (the *reference* scene, bilinear; zone 30 for bordeaux).  It is cut
into 3 overlapping scenes (west, middle, east; each 40 % of the width, overlaps 10 %): the west one stays on
the reference grid
(EPSG:32630 for bordeaux), the middle and east ones are reprojected to the next zone east (EPSG:32631), as a
neighbouring tile would be delivered.  Each scene is written as a STAC Item of per-band COGs; the 3 Items form
an ItemCollection.  Then, with the default model:

1. ``geoseg predict collection.json --confidence -o OUT`` (batch: one folder per scene, ``index.json``);
2. ``geoseg mosaic OUT --like reference.tif -o MOSAIC`` for each rule (confidence, first, last), and once more
   with ``--vector gpkg``;
3. ``geoseg predict reference.tif`` (the whole city as one scene, on the same grid).

Printed: seconds of each step (after a warm-up prediction that exports the runtime's graph once), the
polygon count against a single-pass polygonization of the mosaic (equal: no seams), and the class agreement
of each mosaic with the single-scene prediction (over pixels valid in both), overall, where one scene covers
the pixel and where scenes overlap; and each scene's own agreement on the reference grid (the ceiling).

    python benchmarks/mosaic_e2e.py                      # bordeaux, default model
    python benchmarks/mosaic_e2e.py --city montpellier --keep /tmp/mosaic-bench
    python benchmarks/mosaic_e2e.py --scale 2048,4096     # only: seconds and peak RSS of larger mosaics

``--scale N,...``: two synthetic prediction folders of N x N px (class map + confidence), one in EPSG:32630 and
one in EPSG:32631 overlapping it by half, mosaicked by ``geoseg mosaic`` in a fresh process each (threads,
block 1024): seconds and that process's peak RSS, which should not grow with N.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject, transform_bounds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoseg import mosaic_scenes, predict_scene  # noqa: E402
from geoseg.io.warp import Grid, read_on_grid  # noqa: E402
from geoseg.predict.batch import predict_batch  # noqa: E402

#: ../shared/data/oscd-dw beside the checkout (or beside the folder of worktrees)
SHARED = next((p for p in (ROOT.parent / "shared" / "data" / "oscd-dw", ROOT.parent.parent / "shared" / "data" /
                           "oscd-dw") if p.is_dir()), ROOT.parent / "shared" / "data" / "oscd-dw")
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12")


def _reproject(src_path: Path, dst_path: Path, crs: str, res: float = 10.0, window=None) -> Path:
    """``src_path`` (or its pixel ``window``) onto ``crs`` at ``res`` (bilinear, nodata 0), as a tiled GeoTIFF."""
    with rasterio.open(src_path) as src:
        data = src.read(window=window)
        transform = src.window_transform(window) if window is not None else src.transform
        h, w = data.shape[1:]
        left, top = transform * (0, 0)
        right, bottom = transform * (w, h)
        dst_t, dw, dh = calculate_default_transform(src.crs, crs, w, h, left=left, bottom=bottom, right=right,
                                                    top=top, resolution=res)
        out = np.zeros((src.count, dh, dw), data.dtype)
        reproject(data, out, src_transform=transform, src_crs=src.crs, dst_transform=dst_t, dst_crs=crs,
                  src_nodata=0, dst_nodata=0, resampling=Resampling.bilinear)
        profile = dict(driver="GTiff", width=dw, height=dh, count=src.count, dtype=data.dtype.name, crs=crs,
                       transform=dst_t, nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(out)
            dst.descriptions = src.descriptions
            dst.update_tags(**src.tags())
    return dst_path


def _item(scene: Path, folder: Path, item_id: str, when: str) -> dict:
    """A STAC Item of ``scene``'s bands, one COG each (Planetary Computer style keys B02...)."""
    folder.mkdir(parents=True, exist_ok=True)
    assets = {}
    with rasterio.open(scene) as src:
        for i, band in enumerate(BANDS, start=1):
            key = f"B{band[1:]:0>2}"
            profile = dict(driver="COG", width=src.width, height=src.height, count=1, dtype=src.dtypes[0],
                           crs=src.crs, transform=src.transform, nodata=0, compress="deflate", blocksize=256)
            with rasterio.open(folder / f"{key}.tif", "w", **profile) as dst:
                dst.write(src.read(i), 1)
            assets[key] = {"href": f"./{folder.name}/{key}.tif", "roles": ["data"],
                           "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                           "eo:bands": [{"name": key}],
                           "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 10,
                                             "scale": 0.0001, "offset": 0.0}]}
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        epsg = src.crs.to_epsg()
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "bbox": [west, south, east, north],
            "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                             [west, north], [west, south]]]},
            "properties": {"datetime": when, "platform": "sentinel-2a", "constellation": "sentinel-2",
                           "proj:epsg": epsg},
            "links": [], "assets": assets}


def _scenes(reference: Path, work: Path, when: str, other: str) -> Path:
    """Three overlapping cuts of the reference (west on its grid, middle and east in ``other``) as an
    ItemCollection."""
    from rasterio.windows import Window

    with rasterio.open(reference) as src:
        w, h = src.width, src.height
    cuts = {"west": (0, int(0.40 * w)), "middle": (int(0.30 * w), int(0.70 * w)), "east": (int(0.60 * w), w)}
    items = []
    for name, (c0, c1) in cuts.items():
        tif = work / f"{name}.tif"
        if name == "west":
            with rasterio.open(reference) as src:
                win = Window(c0, 0, c1 - c0, h)
                profile = src.profile | {"width": c1 - c0, "height": h, "transform": src.window_transform(win)}
                with rasterio.open(tif, "w", **profile) as dst:
                    dst.write(src.read(window=win))
        else:
            _reproject(reference, tif, other, window=Window(c0, 0, c1 - c0, h))
        items.append(_item(tif, work / "items" / name, f"S2A_{name}", when))
        for asset in items[-1]["assets"].values():
            asset["href"] = f"./items/{name}/{Path(asset['href']).name}"
    coll = work / "collection.json"
    coll.write_text(json.dumps({"type": "FeatureCollection", "features": items}, indent=1))
    return coll


def _read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _coverage(out: Path, grid: Grid) -> np.ndarray:
    """How many scenes observed each pixel of the reference grid."""
    n = np.zeros((grid.height, grid.width), np.int32)
    for folder in sorted(p for p in out.iterdir() if (p / "landcover.tif").is_file()):
        data, _, _, covered = read_on_grid(str(folder / "landcover.tif"), grid)
        n += ((data[0] != 255) & covered).astype(np.int32)
    return n


def _agreement(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> tuple[float, int]:
    both = where & (a != 255) & (b != 255)
    return (100.0 * float((a[both] == b[both]).mean()) if both.any() else float("nan")), int(both.sum())


#: the mosaic in a fresh process; its peak RSS from /proc (ru_maxrss would keep the forking parent's peak)
_CHILD = """
import re, sys, time
from pathlib import Path
from geoseg.cli import cli
t = time.perf_counter()
cli(sys.argv[1:], standalone_mode=False)
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(time.perf_counter() - t, int(hwm) / 1024)
"""


def _scale(sizes: list[int], work: Path) -> None:
    """Seconds and peak RSS of ``geoseg mosaic`` on two synthetic N x N scenes in two UTM zones."""
    import subprocess

    from affine import Affine
    from pyproj import Transformer

    from geoseg.testing import class_pattern, prediction_folder

    print(f"{'scene px':>9}{'mosaic px':>14}{'seconds':>9}{'Mpx/s':>7}{'peak RSS MB':>13}")
    for n in sizes:
        x0, y0 = 300_000.0, 5_000_000.0  # zone 30, east of its centre
        bx, by = Transformer.from_crs(32630, 32631, always_xy=True).transform(x0 + 5 * n, y0 - 2 * n)
        cls = class_pattern(n, n).astype(np.uint8)
        conf = (50 + (np.arange(n)[None, :] % 50) + 0 * cls).astype(np.uint8)
        a = prediction_folder(work / f"a{n}", cls, conf, crs="EPSG:32630", transform=Affine(10, 0, x0, 0, -10, y0))
        b = prediction_folder(work / f"b{n}", cls, conf[:, ::-1], crs="EPSG:32631",
                              transform=Affine(10, 0, round(bx, -1), 0, -10, round(by, -1)))
        del cls, conf
        res = subprocess.run([sys.executable, "-c", _CHILD, "mosaic", str(a), str(b), "-o", str(work / f"m{n}"),
                              "--overwrite", "-q"], capture_output=True, text=True, check=True,
                             cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        secs, rss = (float(v) for v in res.stdout.split()[-2:])
        with rasterio.open(work / f"m{n}" / "landcover.tif") as src:
            px = src.width * src.height
        print(f"{n:>9}{f'{src.width}x{src.height}':>14}{secs:>9.1f}{px / secs / 1e6:>7.2f}{rss:>13.0f}")


def main() -> None:  # long: one straight script, step by step, printing as it goes
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--city", default="bordeaux")
    ap.add_argument("--date", help="YYYYMMDD folder (default: the city's first)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--scale", help="only the synthetic scale run: scene sizes in px, e.g. 2048,4096")
    args = ap.parse_args()
    if args.scale:
        with tempfile.TemporaryDirectory(prefix="geoseg-mosaic-scale-") as d:
            _scale([int(v) for v in args.scale.split(",")], Path(args.keep or d))
        return
    city = SHARED / args.city
    date = args.date or sorted(p.name for p in city.iterdir() if p.is_dir())[0]
    image = city / date / "image.tif"
    when = f"{date[:4]}-{date[4:6]}-{date[6:]}T11:00:00Z"
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="geoseg-mosaic-bench-")
    work = Path(args.keep or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)

    with rasterio.open(image) as src:  # the city's own UTM zone (the reference) and the next one east
        lon = (src.bounds.left + src.bounds.right) / 2
        north = src.bounds.top > 0
    zone = int((lon + 180) // 6) + 1
    home, other = (f"EPSG:{(32600 if north else 32700) + z}" for z in (zone, zone % 60 + 1))
    reference = _reproject(image, work / "reference.tif", home)
    with rasterio.open(reference) as src:
        grid = Grid(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
    coll = _scenes(reference, work, when, other)
    print(f"{args.city} {date}: reference {grid.width} x {grid.height} px in {home}; scenes west ({home}), "
          f"middle and east ({other}) in {coll}")

    # warm-up: the runtime's graph is exported and cached once (docs/runtimes.md); not part of the figures
    predict_scene(work / "west.tif", args.model, work / "warm", overwrite=True, progress=False)
    t = time.perf_counter()
    batch = predict_batch([str(coll)], args.model, work / "out", confidence=True, overwrite=True, progress=False)
    t_batch = time.perf_counter() - t
    print(f"batch predict of 3 scenes: {t_batch:.1f} s ({len(batch.done)} done, {len(batch.failed)} failed)")
    t = time.perf_counter()
    single = predict_scene(reference, args.model, work / "single", overwrite=True, progress=False)
    print(f"single-scene predict of the whole city: {time.perf_counter() - t:.1f} s")
    ref_map = _read(single.landcover)
    cover = _coverage(work / "out", grid)

    print(f"{'rule':<12}{'seconds':>8}{'agree all':>11}{'one scene':>11}{'overlap':>9}  pixels (all/one/overlap)")
    for rule in ("confidence", "first", "last"):
        t = time.perf_counter()
        r = mosaic_scenes([work / "out"], work / f"mosaic-{rule}", like=reference, rule=rule, overwrite=True)
        secs = time.perf_counter() - t
        m = _read(r.landcover)
        all_, n_all = _agreement(m, ref_map, np.ones_like(cover, bool))
        one, n_one = _agreement(m, ref_map, cover == 1)
        two, n_two = _agreement(m, ref_map, cover >= 2)
        print(f"{rule:<12}{secs:>8.1f}{all_:>10.2f}%{one:>10.2f}%{two:>8.2f}%  {n_all}/{n_one}/{n_two}")
    t = time.perf_counter()
    r = mosaic_scenes([work / "out"], work / "mosaic-vector", like=reference, vector="gpkg", overwrite=True)
    from rasterio.features import shapes

    m = _read(r.landcover)
    one_pass = sum(1 for _ in shapes(m, mask=m != 255))  # the whole mosaic polygonized at once: no seams
    print(f"mosaic --vector gpkg: {time.perf_counter() - t:.1f} s, {r.extra['vector_features']} polygons "
          f"(a single-pass polygonization of the mosaic: {one_pass})")
    # the agreement of each scene's own map with the single-scene prediction, where it observed (the ceiling)
    for folder in sorted(p for p in (work / "out").iterdir() if (p / "landcover.tif").is_file()):
        data, _, _, covered = read_on_grid(str(folder / "landcover.tif"), grid)
        a, n = _agreement(data[0], ref_map, covered)
        print(f"  scene {folder.name} ({CRS.from_wkt(json.loads((folder / 'run.json').read_text())['grid']['crs'])}) "
              f"on the reference grid: {a:.2f}% of {n} px")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
