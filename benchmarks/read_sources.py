#!/usr/bin/env python
"""Reading a Sentinel-2 SAFE / STAC Item scene vs the same pixels from a stacked GeoTIFF (a script, not a test).

Builds, for each ``--sizes`` N (10 m pixels, N x N), from the shipped Hong Kong sample (9-band Sentinel-2 L1C DN,
mirror-tiled up to N):

* ``gtiff``      the stacked 9-band GeoTIFF a user has: tiled 256, deflate, pixel-interleaved, the 20 m bands
                 bilinearly warped onto the 10 m grid (``gtiff_raw``: the same, uncompressed);
* ``safe``       an L1C SAFE (metadata from ``geoseg.testing_sources.write_safe``) whose band files are written
                 like ESA's: JPEG 2000 lossless (5/3 reversible), 1024x1024 tiles, 5 resolution levels,
                 256x256 precincts, 64x64 code-blocks, LRCP, NBITS=15, no TLM/PLT, 20 m bands at 20 m;
* ``stac``       an Earth Search-style STAC Item (``write_stac_item``) of per-band COGs (deflate, 1024 blocks,
                 20 m bands at 20 m);

reads the SAFE and the Item through ``geoseg.io.sources`` (one stacked VRT, bilinear ComplexSource for the 20 m
bands; opened as XML, as predict opens it), and then, each case in its own child process (so its peak RSS is its
own: VmHWM), reads every tile window of the default model's plan (``plan_tiles`` with the card's
tile/overlap/stride) in the prediction's order with ``geoseg.io.raster.read_window``.  A *regime* (REGIMES) says
how: ``today`` is what ``predict_tiles`` does (the dataset opened once per task batch of ``--batch`` tiles, the CPU
default 2; GDAL's cache capped at 128 MiB by ``configure_gdal_cache``); the others change one thing each (keep the
dataset open, cache size, tile order, threads, the VRT XML, strip reads), ``decode-floor`` reads every JP2 tile /
GeoTIFF block exactly once, and ``predict ...`` runs ``geoseg.predict_scene`` end to end.  Prints wall and CPU
seconds, Mpx/s (scene pixels / wall), the ratios to ``gtiff`` of the same round (same regime, and today's), peak
RSS and the cache cap, per size; medians of ``--rounds`` rounds.  ``--jp2-probe``: decode speed of one band by
JPEG 2000 encoding.  Findings: docs/benchmarks/read_sources.md.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/read_sources.py                     # today, 2048 and 6144
    PYTHONPATH=$PWD .venv/bin/python benchmarks/read_sources.py --regimes all --sizes 2048 --workdir /tmp/rs
    PYTHONPATH=$PWD .venv/bin/python benchmarks/read_sources.py --regimes today,open-once+cache-rows,decode-floor
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tiles" / "hongkong_20160927" / "image.tif"
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12")
RES = {"B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B11": 20, "B12": 20}
X0, Y0 = 600000.0, 2520000.0  # UTM 49N, on the 60 m grid
#: ESA's L1C band files: gdalinfo of a real B02.jp2 (10980 x 10980) shows Block=1024x1024 and overviews
#: 5490, 2745, 1372, 686 (5 resolution levels); lossless; 256 x 256 precincts, no TLM / PLT markers.
ESA_JP2 = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES", "BLOCKXSIZE": "1024",
           "BLOCKYSIZE": "1024", "RESOLUTIONS": "5", "PRECINCTS": "{256,256},{256,256},{256,256},{256,256},{256,256}",
           "CODEBLOCK_WIDTH": "64", "CODEBLOCK_HEIGHT": "64", "PROGRESSION": "LRCP", "NBITS": "15"}
COG = {"driver": "COG", "COMPRESS": "DEFLATE", "BLOCKSIZE": "1024"}

#: A regime: how the scene is read, as changes to "the prediction as geoseg does it today" (BASE: the dataset
#: opened once per task batch of --batch tiles, 128 MiB GDAL cache, row-major tiles, GDAL's default threads,
#: the reader's VRT as it is), and the datasets it is measured on.  Ratios are to gtiff in the same regime.
BASE = {"open": "batch", "cache_mb": 128, "order": "rows", "env": {}, "xml": None, "read": "tiles"}
ONE_THREAD = {"GDAL_NUM_THREADS": "1", "OPJ_NUM_THREADS": "1"}
FIXED = {"open": "run", "cache_mb": 512}
REGIMES: dict[str, tuple[dict, tuple[str, ...]]] = {
    "today": ({}, ("gtiff", "gtiff_raw", "safe", "stac")),
    "open-once": ({"open": "run"}, ("gtiff", "safe", "stac")),
    "cache-512": ({"cache_mb": 512}, ("gtiff", "safe")),
    "open-once+cache-512": (FIXED, ("gtiff", "safe", "stac")),
    "open-once+cache-1024": ({"open": "run", "cache_mb": 1024}, ("gtiff", "safe")),
    "open-once+cache-rows": ({"open": "run", "cache_mb": "rows"}, ("gtiff", "safe", "stac")),
    "open-once+jp2-strips": ({"open": "run", "order": "strips"}, ("gtiff", "safe", "stac")),
    "2-handles+cache-512": ({"open": "run2", "cache_mb": 512}, ("gtiff", "safe")),
    "batch-8": ({"batch": 8}, ("gtiff", "safe")),
    "open-once+cache-512+threads-1": ({**FIXED, "env": ONE_THREAD}, ("gtiff", "safe")),
    "tile-as-block": ({**FIXED, "xml": "tile_as_block"}, ("safe",)),
    "srcprops-512": ({**FIXED, "xml": "srcprops_512"}, ("safe",)),
    "nearest-20m": ({**FIXED, "xml": "nearest"}, ("safe", "stac")),
    "no-src-nodata": ({**FIXED, "xml": "no_src_nodata"}, ("safe", "stac")),
    "simple-source": ({**FIXED, "xml": "simple_source"}, ("safe", "stac")),
    "row-strips": ({"read": "row_strips"}, ("gtiff", "safe")),
    "row-strips+open-once+cache-512": ({**FIXED, "read": "row_strips"}, ("gtiff", "safe")),
    "decode-floor": ({"read": "blocks"}, ("gtiff", "safe", "stac")),
    "decode-floor+threads-1": ({"read": "blocks", "env": ONE_THREAD}, ("gtiff", "safe")),
    # geoseg.predict_scene end to end (model included): what the read costs a user
    "predict today": ({"read": "predict"}, ("gtiff", "safe", "stac")),
    "predict open-once+cache-rows": ({"open": "run", "cache_mb": "rows", "read": "predict"},
                                     ("gtiff", "safe", "stac")),
}
MAIN = "today"
#: the VRT-only variants have no gtiff of their own: their 'x gtiff same regime' is the regime they change
REF = dict.fromkeys(("tile-as-block", "srcprops-512", "nearest-20m", "no-src-nodata", "simple-source"),
                    "open-once+cache-512")
#: --jp2-probe: band B02 re-encoded several ways, each decoded once on one thread (how much is ESA's choice)
PROBE = {
    "jp2 ESA-like": ESA_JP2,
    "jp2 GDAL lossless defaults": {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"},
    "jp2 ESA-like, 512 tiles": {**ESA_JP2, "BLOCKXSIZE": "512", "BLOCKYSIZE": "512"},
    "jp2 ESA-like + BYPASS (not ESA)": {**ESA_JP2, "CODEBLOCK_STYLE": "BYPASS"},
    "jp2 lossy q=25 (not ESA)": {"driver": "JP2OpenJPEG", "QUALITY": "25", "REVERSIBLE": "NO"},
    "gtiff deflate 256": {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256,
                          "compress": "deflate"},
    "cog deflate 1024": COG,
}


# ----------------------------------------------------------------------------------------------- building
def sample_period() -> np.ndarray:
    """The sample's 9 bands mirrored into a seamless period (rows and columns twice the sample's)."""
    import rasterio

    with rasterio.open(SAMPLE) as src:
        base = src.read([src.descriptions.index(b) + 1 for b in BANDS])
    tile = np.concatenate([base, base[:, :, ::-1]], axis=2)
    return np.concatenate([tile, tile[:, ::-1, :]], axis=1)


def native_bands(size: int) -> dict[str, np.ndarray]:
    """Every band at its own resolution: 10 m bands mirror-tiled to size x size, 20 m bands their 2x2 mean."""
    period = sample_period()
    rows = np.arange(size) % period.shape[1]
    cols = np.arange(size) % period.shape[2]
    out = {}
    for i, name in enumerate(BANDS):
        a = period[i][rows][:, cols]
        if RES[name] == 20:
            a = a.reshape(size // 2, 2, size // 2, 2).astype(np.float32).mean(axis=(1, 3))
            a = np.clip(np.rint(a), 1, 32767).astype(np.uint16)
        out[name] = np.clip(a, 1, 32767).astype(np.uint16)  # NBITS=15 as in ESA's files; 0 is nodata
    return out


def _transform(res: int):
    from rasterio.transform import Affine

    return Affine(float(res), 0.0, X0, 0.0, -float(res), Y0)


def write_band(path: Path, arr: np.ndarray, res: int, opts: dict) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    with rasterio.open(path, "w", width=arr.shape[1], height=arr.shape[0], count=1, dtype="uint16",
                       crs="EPSG:32649", transform=_transform(res), nodata=0, **opts) as dst:
        dst.write(arr, 1)


def write_stack(path: Path, bands: dict[str, np.ndarray], size: int, compress: str | None) -> None:
    """The user's stacked GeoTIFF: 20 m bands warped bilinearly onto the 10 m grid (gdalwarp-style)."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    profile = {"driver": "GTiff", "width": size, "height": size, "count": len(BANDS), "dtype": "uint16",
               "crs": "EPSG:32649", "transform": _transform(10), "nodata": 0, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "bigtiff": "if_safer"}
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = BANDS
        step = 2048
        for r in range(0, size, step):
            h = min(step, size - r)
            strip = np.zeros((len(BANDS), h, size), dtype=np.uint16)
            for i, name in enumerate(BANDS):
                if RES[name] == 10:
                    strip[i] = bands[name][r:r + h]
                else:  # the strip's rows from the whole 20 m band (the warp needs its neighbours)
                    reproject(bands[name], strip[i], src_transform=_transform(20), src_crs="EPSG:32649",
                              dst_transform=_transform(10) * _translate(r), dst_crs="EPSG:32649",
                              resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
            dst.write(strip, window=rasterio.windows.Window(0, r, size, h))


def _translate(rows: int):
    from rasterio.transform import Affine

    return Affine.translation(0, rows)


def build(work: Path, size: int) -> dict[str, str]:
    """The four datasets of ``size`` under ``work`` (reused when already built); {case: dataset for rasterio}."""
    from geoseg.io.sources import read_safe, read_stac_item
    from geoseg.testing_sources import write_reference, write_safe, write_stac_item

    d = work / str(size)
    done = d / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    bands = native_bands(size)
    write_stack(d / "stack_deflate.tif", bands, size, "deflate")
    write_stack(d / "stack_raw.tif", bands, size, None)
    small = write_reference(d / "small_reference.tif", size=60)
    safe = write_safe(d, small)  # ESA-faithful metadata; the band files are replaced below
    for name in BANDS:
        fname = f"B{name[1:]:0>2}"
        (path,) = safe.glob(f"GRANULE/*/IMG_DATA/*_{fname}.jp2")
        write_band(path, bands[name], RES[name], ESA_JP2)
    item = write_stac_item(d / "stac", small)
    for name in BANDS:
        write_band(d / "stac" / f"B{name[1:]:0>2}.tif", bands[name], RES[name], COG)
    out = {"gtiff": str(d / "stack_deflate.tif"), "gtiff_raw": str(d / "stack_raw.tif"),
           "safe": read_safe(safe, BANDS).dataset, "stac": read_stac_item(item, BANDS).dataset}
    sizes = {k: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for k, p in
             (("safe", safe), ("stac", d / "stac"))}
    sizes.update({k: Path(out[k]).stat().st_size for k in ("gtiff", "gtiff_raw")})
    out["_bytes"] = json.dumps(sizes)
    out["_build_s"] = f"{time.perf_counter() - t0:.1f}"
    done.write_text(json.dumps(out))
    return out


# ------------------------------------------------------------------------------------------------- child
def vrt_variant(xml: str, how: str | None) -> str:
    """The reader's VRT with one thing changed (an experiment), or as it is."""
    if how is None:
        return xml
    if how == "tile_as_block":
        return xml.replace("</SourceFilename>",
                           '</SourceFilename>\n      <OpenOptions><OOI key="USE_TILE_AS_BLOCK">YES</OOI>'
                           "</OpenOptions>")
    if how == "srcprops_512":
        return re.sub(r'BlockXSize="\d+" BlockYSize="\d+"', 'BlockXSize="512" BlockYSize="512"', xml)
    if how == "nearest":
        return xml.replace('resampling="bilinear"', 'resampling="nearest"')
    if how == "no_src_nodata":
        return re.sub(r"\s*<NODATA>[^<]*</NODATA>", "", xml)
    if how == "simple_source":  # same pixels here: the sources' own nodata (0) is the VRT bands' nodata
        return vrt_variant(xml, "no_src_nodata").replace("ComplexSource", "SimpleSource")
    raise ValueError(how)


def tile_order(tiles: list, how: str, strip: int = 2048) -> list:
    """Row-major (the prediction's order) or column strips of ``strip`` px read top to bottom, so that the
    JP2 tiles two consecutive tile rows share are still in a small cache."""
    if how == "rows":
        return tiles
    return sorted(tiles, key=lambda t: (t.window.col_off // strip, t.window.row_off, t.window.col_off))


_BYTES = {"Byte": 1, "UInt16": 2, "Int16": 2, "UInt32": 4, "Int32": 4, "Float32": 4, "Float64": 8}


def row_cache_bytes(dataset: str, floor: int = 128 * 2**20) -> int:
    """The GDAL cache that holds two full rows of blocks of every band file, +25 %, at least ``floor``: what
    row-major tiles overlapping by less than a block need so that no block is decoded twice (the rule
    proposed for geoseg; a VRT's band files are read from its SourceProperties, no file opened)."""
    props = re.findall(r'<SourceProperties RasterXSize="(\d+)" RasterYSize="\d+" DataType="(\w+)" '
                       r'BlockXSize="(\d+)" BlockYSize="(\d+)"', dataset)
    if props:
        rows = [(int(w), _BYTES.get(t, 8), int(bx), int(by), 1) for w, t, bx, by in props]
    else:
        import rasterio

        with rasterio.open(dataset) as src:
            (by, bx), = set(src.block_shapes)
            rows = [(src.width, np.dtype(src.dtypes[0]).itemsize, bx, by, src.count)]
    need = sum(-(-w // bx) * bx * by * nbytes * n for w, nbytes, bx, by, n in rows) * 2
    return max(floor, int(need * 1.25))


def _masks(src) -> tuple[bool, float | None]:
    """use_masks / input_nodata as geoseg.predict.api derives them from open_scene's SceneInfo."""
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums
    per_dataset = any(MaskFlags.all_valid not in f for f in flags)
    nodata_only = src.nodata is not None and all(set(f) == {MaskFlags.nodata} for f in flags)
    return per_dataset and not nodata_only, src.nodata if nodata_only else (None if per_dataset else 0.0)


def child(cfg: dict) -> dict:
    """One measured read in this (fresh) process: {wall_s, cpu_s, peak_rss_mb, pixels, ...}."""
    for k, v in cfg["env"].items():  # before GDAL starts: OPJ_NUM_THREADS is read from the environment
        os.environ[k] = v
    import rasterio

    from geoseg.io.grid import plan_tiles
    from geoseg.io.raster import configure_gdal_cache, match_bands
    from geoseg.model.package import read_card

    cache = row_cache_bytes(cfg["dataset"]) if cfg["cache_mb"] == "rows" else cfg["cache_mb"] * 2**20
    if cfg["read"] == "predict":  # predict_tiles calls configure_gdal_cache() itself: the environment wins
        os.environ["GDAL_CACHEMAX"] = str(cache)
    configure_gdal_cache(cache)
    for k, v in cfg["env"].items():
        rasterio.env.set_gdal_config(k, v)
    if cfg["read"] == "predict":
        return _predict(cfg)
    card = read_card("default")
    dataset = vrt_variant(cfg["dataset"], cfg["xml"])
    with rasterio.open(dataset) as src:
        h, w, names, block = src.height, src.width, src.descriptions, src.block_shapes[0]
        use_masks, nodata = _masks(src)
    plan = plan_tiles(h, w, card.tile_size, card.overlap, card.output_stride)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if cfg["read"] == "tiles":
        idx = match_bands(card.bands, names, len(names))
        total = _tiles(dataset, tile_order(list(plan), cfg["order"]), idx, use_masks, nodata, cfg)
    elif cfg["read"] == "row_strips":  # one full-width strip per tile row into a reused buffer, tiles cut from it
        total = _row_strips(dataset, plan, match_bands(card.bands, names, len(names)), cfg["open"] == "run")
    else:  # every block of every band file exactly once: the decode floor
        total = _read_blocks(dataset)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return {"wall_s": t1 - t0, "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "peak_rss_mb": peak_rss_mb(), "pixels": h * w, "tiles": len(plan), "block": list(block),
            "checksum": total, "cache_mb": cache / 2**20}


def _predict(cfg: dict) -> dict:
    """``geoseg.predict_scene`` end to end (default model, CPU, threads); with ``open`` "run", the scene is opened
    once per process and its worker threads read it one at a time (the proposed predict_tiles change, patched
    in here: predict_tiles reads all its tiles before its forward pass, so the lock covers only reads)."""
    import contextlib
    import threading
    import types
    import warnings

    import rasterio

    import geoseg.predict.tasks as tasks
    from geoseg import predict_scene

    if cfg["open"] == "run":  # the scene opened once per process, shared by the worker threads one at a time
        shared: list = []
        lock = threading.Lock()

        @contextlib.contextmanager
        def shared_open(path: str, *args: object, **kwargs: object):
            with lock:
                if not shared:
                    shared.append(rasterio.open(path, *args, **kwargs))
                yield shared[0]

        tasks.rasterio = types.SimpleNamespace(open=shared_open)
    out = tempfile.mkdtemp(prefix="geoseg-read-sources-predict-")
    try:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predict_scene(cfg["dataset"], "default", out, overwrite=True, progress=False)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with rasterio.open(os.path.join(out, "landcover.tif")) as src:
            classes = src.read(1)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    np.save(cfg["save"], classes)
    return {"wall_s": t1 - t0, "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "peak_rss_mb": peak_rss_mb(), "pixels": classes.size, "checksum": 0.0,
            "cache_mb": int(os.environ["GDAL_CACHEMAX"]) / 2**20}


def _tiles(dataset: str, tiles: list, idx: list[int], use_masks: bool, nodata: float | None, cfg: dict) -> float:
    """Every tile through read_window, as predict_tiles reads them.  ``open``: "batch" (a dataset per task
    batch, today), "run" (one for the whole read), "run2" (two, batches alternating: two workers that each
    keep their own)."""
    import rasterio

    from geoseg.io.grid import batches
    from geoseg.io.raster import read_window

    total = 0.0
    keep = [rasterio.open(dataset) for _ in range({"run": 1, "run2": 2}.get(cfg["open"], 0))]
    for i, batch in enumerate(batches(tiles, cfg["batch"])):
        src = keep[i % len(keep)] if keep else rasterio.open(dataset)
        for t in batch:
            data, valid = read_window(src, t.window, idx, use_masks, nodata)
            total += float(data[:, ::97, ::89].sum()) + int(valid[::97, ::89].sum())
        if not keep:
            src.close()
    for src in keep:
        src.close()
    return total


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; not ru_maxrss, which Linux carries over from the parent across fork+exec)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row_strips(dataset: str, plan, idx: list[int], keep_open: bool) -> float:
    """Read each tile row's full-width strip once into one reused uint16 buffer (the dataset opened per strip,
    or once) and cut the tiles from it as float32, as read_window would return them."""
    import rasterio

    th, h, w = plan.tile_height, plan.height, plan.width
    buf = np.zeros((len(idx), th, w), dtype=np.uint16)
    total = 0.0
    keep = rasterio.open(dataset) if keep_open else None
    for r in plan.row_offsets:
        src = keep or rasterio.open(dataset)
        hh = min(th, h - r)
        src.read(list(idx), window=rasterio.windows.Window(0, r, w, hh), out=buf[:, :hh])
        if keep is None:
            src.close()
        for c in plan.col_offsets:
            tile = buf[:, :hh, c:c + plan.tile_width].astype(np.float32)
            total += float(tile[:, ::97, ::89].sum())
    if keep is not None:
        keep.close()
    return total


def _read_blocks(dataset: str) -> float:
    """Read every internal block of the dataset's band files (each JP2 tile / GeoTIFF block) once."""
    import rasterio

    paths = re.findall(r"<SourceFilename[^>]*>([^<]+)</SourceFilename>", dataset) or [dataset]
    total = 0.0
    for path in paths:
        with rasterio.open(path) as src:
            idx = list(range(1, src.count + 1))
            for _, win in src.block_windows(1):
                total += float(src.read(idx, window=win)[:, ::97, ::89].sum())
    return total


# ------------------------------------------------------------------------------------------------ parent
def run_child(cfg: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    if out.returncode:
        raise RuntimeError(f"child {cfg['name']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cases(regimes: list[str], kinds: str, skip: str = "") -> list[tuple[str, str, dict]]:
    """(regime, dataset, overrides) of every child of one round."""
    return [(r, kind, REGIMES[r][0]) for r in regimes for kind in REGIMES[r][1]
            if kind in kinds.split(",") and f"{r}/{kind}" not in skip.split(",")]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ratio(runs: list[dict], ref: list[dict] | None, key: str) -> tuple[float, float, float] | None:
    if not ref:
        return None
    r = [a[key] / b[key] for a, b in zip(runs, ref, strict=True)]
    return statistics.median(r), min(r), max(r)


def _fmt(x: tuple[float, float, float] | None) -> str:
    return f"{x[0]:6.2f} [{x[1]:.2f}-{x[2]:.2f}]" if x else f"{'-':>6} {'':13}"


def _row(results: dict, size: int, regime: str, kind: str) -> str:
    runs = results[(size, regime, kind)]
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    ref = results.get((size, REF.get(regime, regime), "gtiff"))
    same = _ratio(runs, ref, "wall_s")
    today = _ratio(runs, results.get((size, MAIN, "gtiff")), "wall_s")
    cpu_same = _ratio(runs, ref, "cpu_s")
    rss = max(r["peak_rss_mb"] for r in runs)
    return (f"{size:>6} {regime:<31} {kind:<9} {wall:7.2f} {cpu:7.2f} {runs[0]['pixels'] / wall / 1e6:6.2f} "
            f"{_fmt(same)} {_fmt(today)} {cpu_same[0] if cpu_same else float('nan'):6.2f} {rss:7.0f} "
            f"{runs[0].get('cache_mb', 0):6.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2048,6144", help="scene sizes, 10 m pixels a side (even)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2, help="tiles per opened dataset (predict's CPU batch: 2)")
    ap.add_argument("--regimes", default=MAIN, help=f"comma list of {', '.join(REGIMES)}, or 'all'")
    ap.add_argument("--kinds", default="gtiff,gtiff_raw,safe,stac", help="datasets to read (of each regime's)")
    ap.add_argument("--skip", default="", help="comma list of regime/dataset cases to leave out (e.g. today/safe)")
    ap.add_argument("--workdir", help="keep the built data here (reused by later runs); default: a temp dir")
    ap.add_argument("--json", help="write every run's numbers here")
    ap.add_argument("--jp2-probe", action="store_true", help="also: decode speed of B02 by JP2 encoding")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    exps = list(REGIMES) if args.regimes == "all" else [e for e in args.regimes.split(",") if e]
    unknown = [e for e in exps if e not in REGIMES]
    if unknown:
        ap.error(f"unknown regime(s) {', '.join(unknown)}; choose among: {', '.join(REGIMES)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="geoseg-read-sources-"))
    try:
        _run(args, sizes, exps, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, sizes: list[int], regimes: list[str], work: Path) -> None:
    print(f"# load before: {load()}  (1/5/15 min; 2 cores shared)", flush=True)
    datasets = {}
    for size in sizes:
        datasets[size] = build(work, size)
        mb = {k: round(v / 2**20, 1) for k, v in json.loads(datasets[size]["_bytes"]).items()}
        print(f"# built {size}: {mb} MiB on disk in {datasets[size]['_build_s']} s; same pixels? "
              f"{agreement(datasets[size])}", flush=True)
    results: dict[tuple[int, str, str], list[dict]] = {}
    loads = []
    for rnd in range(args.rounds):
        for size in sizes:
            for regime, kind, over in cases(regimes, args.kinds, args.skip):
                cfg = child_cfg(args.batch, work / str(size), datasets[size], regime, kind, over)
                results.setdefault((size, regime, kind), []).append(run_child(cfg))
        loads.append(load())
        print(f"# round {rnd + 1} done, load {loads[-1]}", flush=True)
    print(f"\n{'size':>6} {'regime':<31} {'data':<9} {'wall_s':>7} {'cpu_s':>7} {'Mpx/s':>6} "
          f"{'x gtiff same regime':>20} {'x gtiff today':>20} {'cpu x':>6} {'rss_MB':>7} {'cache':>6}")
    for size in sizes:
        for regime, kind, _ in cases(regimes, args.kinds, args.skip):
            if (size, regime, kind) in results:
                print(_row(results, size, regime, kind))
    print(f"# medians [min-max] of {args.rounds} rounds; Mpx/s = scene pixels / wall; 'x gtiff': wall time over "
          f"the same round's stacked GeoTIFF; 'cpu x': CPU seconds over gtiff's, same regime; load after each "
          f"round: {'; '.join(loads)}")
    for size in sizes:
        if any(REGIMES[r][0].get("read") == "predict" for r in regimes):
            print(map_agreement(work / str(size)))
    if args.jp2_probe:
        jp2_probe(work, sizes[0])
    if args.json:
        Path(args.json).write_text(json.dumps({f"{s}:{r}:{k}": v for (s, r, k), v in results.items()}, indent=1))


def jp2_probe(work: Path, size: int) -> None:
    """Decode speed of one 10 m band (B02) by encoding, one thread, every block once."""
    band = native_bands(size)["B2"]
    print(f"\n# one band (B02, {size}^2) decoded once, 1 thread; load {load()}")
    print(f"{'encoding':<34} {'MiB':>6} {'cpu_s':>7} {'Mpx/s/core':>10}")
    for name, opts in PROBE.items():
        path = work / str(size) / "probe" / (re.sub(r"\W+", "_", name) + (".jp2" if "jp2" in name else ".tif"))
        if not path.exists():
            write_band(path, band, 10, opts)
        cfg = {**BASE, "read": "blocks", "env": ONE_THREAD, "name": name, "dataset": str(path), "batch": 2}
        runs = [run_child(cfg) for _ in range(2)]
        cpu = min(r["cpu_s"] for r in runs)
        print(f"{name:<34} {path.stat().st_size / 2**20:6.1f} {cpu:7.2f} {size * size / cpu / 1e6:10.1f}")


def child_cfg(batch: int, d: Path, datasets: dict[str, str], regime: str, kind: str, over: dict) -> dict:
    cfg = {**BASE, "batch": batch, **over, "name": f"{regime}/{kind}", "dataset": datasets[kind]}
    if cfg["read"] == "predict":  # a path, as a user passes it (the VRT written to a file)
        tag = re.sub(r"\W+", "_", regime)
        cfg["save"] = str(d / f"classes_{tag}_{kind}.npy")
        if kind in ("safe", "stac"):
            cfg["dataset"] = str(d / f"{kind}.vrt")
            Path(cfg["dataset"]).write_text(datasets[kind], encoding="utf-8")
    return cfg


def map_agreement(d: Path) -> str:
    """How many pixels of each predicted class map equal the stacked GeoTIFF's (today's regime)."""
    ref = d / "classes_predict_today_gtiff.npy"
    if not ref.exists():
        return ""
    a = np.load(ref)
    same = {f.stem[len("classes_predict_"):]: float((np.load(f) == a).mean()) * 100
            for f in sorted(d.glob("classes_predict_*.npy")) if f != ref}
    return f"# {d.name}: class maps equal to the stacked GeoTIFF's: " + ", ".join(
        f"{k} {v:.2f} %" for k, v in same.items())


def agreement(ds: dict[str, str]) -> str:
    """How far the SAFE / STAC reads are from the stacked GeoTIFF's pixels (one 512 window in the middle)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(ds["gtiff"]) as g:
        win = Window(g.width // 2 - 256, g.height // 2 - 256, 512, 512)
        ref = g.read(window=win).astype(np.int32)
    out = []
    for kind in ("safe", "stac"):
        with rasterio.open(ds[kind]) as src:
            d = np.abs(src.read(window=win).astype(np.int32) - ref)
        out.append(f"{kind}: {100 * float((d == 0).mean()):.1f} % equal, max |diff| {int(d.max())} DN")
    return "; ".join(out)


if __name__ == "__main__":
    main()
