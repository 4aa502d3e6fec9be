#!/usr/bin/env python
"""Prediction throughput and memory per runtime: bare model forward vs end-to-end ``geoseg predict``.

Prints, in one run, on one real 9-band scene and the shipped default model (Unet/resnet18, 9 bands):

* bare forward per runtime (Mpx/s on pre-read, pre-normalised batches of the card's tiles, the batch size
  ``predict`` uses, every core), and its ratio to torch eager;
* end to end per runtime (``predict_scene(runtime=...)``): computed Mpx/s (tiles x tile area, i.e. counting
  overlap), its ratio to the same runtime's bare forward and to torch eager end to end, and the
  ``--profile`` stages (summed over tasks);
* peak RSS of every run (each runs in its own child process), and whether the child imported torch; the
  OpenVINO end-to-end run is repeated in a child that imports torch first ("openvino+torch"), to show what
  keeping torch out of the prediction tasks saves.

The scene is a mosaic of 400 x 400 crops of the real Sentinel-2 L1C scenes (the OSCD cities of
``shared/data/oscd-dw`` and the shipped Hong Kong sample; B2,B3,B4,B5,B6,B7,B8,B11,B12, DN), written block by
block (never a full-scene array).  The machine may be shared: every measurement is repeated ``--repeats``
times (medians and ranges are printed) and the load average is printed before and after each round.

    python benchmarks/predict_throughput.py                          # 4096^2, torch/onnxruntime/openvino
    python benchmarks/predict_throughput.py --size 2048 --repeats 3 --runtimes torch,openvino
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tiles" / "hongkong_20160927" / "image.tif"
DATA = ROOT / "shared" / "data" / "oscd-dw"
if not DATA.exists():
    DATA = Path("/work/shared/data/oscd-dw")
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12")
CELL = 400


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of /proc/self/status (the high-water mark of its own address space;
    ``ru_maxrss`` would include the parent's RSS at the fork, which Linux carries across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def source_images() -> list[Path]:
    """The real 9-band scenes to mosaic: every OSCD image present, and the shipped sample."""
    paths = [Path(p) for p in sorted(glob.glob(str(DATA / "*" / "*" / "image.tif")))]
    return paths + ([SAMPLE] if SAMPLE.exists() else [])


def make_scene(path: Path, size: int, seed: int = 0) -> int:
    """A size x size mosaic of CELL x CELL crops of real scenes (random image, offset, flip per cell);
    returns the number of source images."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    images = []
    for p in source_images():
        with rasterio.open(p) as src:
            if src.count == 9 and src.height >= CELL and src.width >= CELL:
                images.append(src.read())
    if not images:
        sys.exit("no 9-band source scene found (shared/data/oscd-dw or tiles/hongkong_20160927)")
    n = -(-size // CELL)
    plan = [[(int(rng.integers(len(images))), rng.random(), rng.random(), int(rng.integers(4)))
             for _ in range(n)] for _ in range(n)]
    profile = dict(driver="GTiff", width=size, height=size, count=9, dtype="uint16", nodata=0,
                   crs="EPSG:32650", transform=Affine(10, 0, 200_000, 0, -10, 2_500_000), tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", zlevel=1, predictor=2, bigtiff="yes")
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = BANDS
        for i, row in enumerate(plan):
            strip = np.zeros((9, CELL, n * CELL), np.uint16)
            for j, (k, fr, fc, flip) in enumerate(row):
                img = images[k]
                r0 = int(fr * (img.shape[1] - CELL))
                c0 = int(fc * (img.shape[2] - CELL))
                crop = img[:, r0 : r0 + CELL, c0 : c0 + CELL]
                crop = crop[:, ::-1] if flip & 1 else crop
                crop = crop[:, :, ::-1] if flip & 2 else crop
                strip[:, :, j * CELL : (j + 1) * CELL] = crop
            h = min(CELL, size - i * CELL)
            dst.write(strip[:, :h, :size], window=rasterio.windows.Window(0, i * CELL, size, h))
    return len(images)


def variants(names: list[str]) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to measure: the installed runtimes asked for at f32, and OpenVINO and torch at
    bf16 where the CPU has native BF16."""
    from geoseg.model.backends import cpu_has_bf16

    out = [(r, "f32") for r in names if r == "torch" or importlib.util.find_spec(r) is not None]
    if cpu_has_bf16():
        out += [(r, "bf16") for r, _ in list(out) if r in ("openvino", "torch")]
    return out


def child_bare(model: str, scene: str, runtime: str, precision: str, batch: int, n_batches: int) -> dict:
    """Forward passes of ``runtime`` on pre-read, pre-normalised batches of the scene's tiles."""
    import rasterio

    from geoseg.model.package import read_card
    from geoseg.model.runtime import choose_runtime, configure_threads, get_predictor

    batch = batch or choose_runtime(runtime, "cpu", precision).batch_size
    cores = len(os.sched_getaffinity(0))
    configure_threads(cores)
    card = read_card(model)
    t = card.tile_size
    with rasterio.open(scene) as src:
        span_r, span_c = max(1, src.height - t), max(1, src.width - t)
        arrays = [src.read(window=rasterio.windows.Window((i * 389) % span_c, (i * 211) % span_r, t, t))
                  .astype(np.float32) for i in range(batch * n_batches)]
    x = np.stack([card.normalization.apply(a) for a in arrays]).reshape(n_batches, batch, 9, t, t)
    pred = get_predictor(model, "cpu", None, runtime, precision)
    pred(x[0])  # warm-up
    t0 = time.perf_counter()
    for b in x:
        pred(b)
    dt = time.perf_counter() - t0
    return {"mpx_s": n_batches * batch * t * t / dt / 1e6, "seconds": dt, "threads": cores, "batch": batch,
            "torch_loaded": "torch" in sys.modules}


def child_predict(model: str, scene: str, out: str, runtime: str, precision: str, with_torch: bool) -> dict:
    if with_torch:
        import torch  # noqa: F401  - what the torch-free OpenVINO path saves

    from geoseg import predict_scene

    t0 = time.perf_counter()
    r = predict_scene(scene, model, out, overwrite=True, runtime=runtime, precision=precision, profile=True,
                      progress=False)
    dt = time.perf_counter() - t0
    rec = json.loads(Path(r.run_record).read_text())
    return {"seconds": dt, "mpx_s": rec["computed_pixels"] / dt / 1e6, "tiles": rec["tiles"],
            "computed_pixels": rec["computed_pixels"], "scene_pixels": rec["grid"]["width"] * rec["grid"]["height"],
            "batch": rec["options"]["batch_size"], "workers": rec["options"]["workers"],
            "threads": rec["options"]["torch_threads"], "runtime": rec["runtime"],
            "profile": rec["profile"]["stages_s"], "torch_loaded": "torch" in sys.modules}


def run_child(*args: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", *args], capture_output=True,
                       text=True, env=env)
    if p.returncode:
        sys.exit(f"child {args[0]} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def med(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def measure(model: str, scene: Path, work: Path, todo: list[tuple[str, str]], batch: int, n_batches: int,
            repeats: int) -> dict:
    """Every measurement ``repeats`` times, round by round (so the load hits all runtimes alike)."""
    res: dict = {"bare": {}, "e2e": {}, "loads": []}
    for rnd in range(repeats):
        before = load()
        for rt, prec in todo:
            key = f"{rt}-{prec}"
            res["bare"].setdefault(key, []).append(
                run_child("bare", model, str(scene), rt, prec, str(batch), str(n_batches)))
            res["e2e"].setdefault(key, []).append(
                run_child("predict", model, str(scene), str(work / f"out-{key}"), rt, prec, "0"))
            if rt == "openvino" and prec == "f32":
                res["e2e"].setdefault("openvino+torch-f32", []).append(
                    run_child("predict", model, str(scene), str(work / "out-ovt"), rt, prec, "1"))
        res["loads"].append((before, load()))
        print(f"round {rnd + 1}/{repeats}: load average {before} -> {load()}", flush=True)
    return res


def report(res: dict, todo: list[tuple[str, str]]) -> None:
    """The table: bare and end-to-end Mpx/s, their ratios, peak RSS, and the profile of each runtime."""
    bare = {k: [r["mpx_s"] for r in v] for k, v in res["bare"].items()}
    e2e = {k: [r["mpx_s"] for r in v] for k, v in res["e2e"].items()}
    ref_bare = statistics.median(bare["torch-f32"]) if "torch-f32" in bare else float("nan")
    ref_e2e = statistics.median(e2e["torch-f32"]) if "torch-f32" in e2e else float("nan")
    print(f"\n{'runtime':<22}{'bare Mpx/s':>22}{'x torch':>8}{'e2e Mpx/s':>22}{'x torch e2e':>12}"
          f"{'e2e/bare':>9}{'RSS bare MB':>12}{'RSS e2e MB':>11}{'torch in e2e':>13}")
    keys = [f"{r}-{p}" for r, p in todo] + (["openvino+torch-f32"] if "openvino+torch-f32" in e2e else [])
    for key in keys:
        bkey = key.replace("+torch", "")  # openvino+torch: the same forward as openvino
        b = bare.get(bkey, [float("nan")])
        e = e2e[key]
        bm, em = statistics.median(b), statistics.median(e)
        rss_b = max((r["peak_rss_mb"] for r in res["bare"].get(bkey, [])), default=float("nan"))
        rss_e = max(r["peak_rss_mb"] for r in res["e2e"][key])
        torch_in = any(r["torch_loaded"] for r in res["e2e"][key])
        print(f"{key:<22}{med(b) if bkey in bare else '-':>22}{bm / ref_bare:>8.2f}{med(e):>22}"
              f"{em / ref_e2e:>12.2f}{em / bm:>9.2f}{rss_b:>12.0f}{rss_e:>11.0f}{str(torch_in):>13}")
    print("\nend-to-end profile (median seconds over rounds, summed over tasks):")
    stages = list(next(iter(res["e2e"].values()))[0]["profile"])
    print(f"{'runtime':<22}" + "".join(f"{s:>10}" for s in stages) + f"{'wall':>10}")
    for key in keys:
        runs = res["e2e"][key]
        cells = [statistics.median(r["profile"][s] for r in runs) for s in stages]
        wall = statistics.median(r["seconds"] for r in runs)
        print(f"{key:<22}" + "".join(f"{c:>10.2f}" for c in cells) + f"{wall:>10.2f}")


def agreement(work: Path, keys: list[str]) -> None:
    """Share of pixels whose class equals torch eager's, per runtime, on the whole end-to-end map; and the
    largest probability difference (percent) where probabilities were written."""
    import rasterio

    ref = work / "out-torch-f32" / "landcover.tif"
    if not ref.exists():
        return
    print("\nclass agreement with torch eager end to end (whole scene):")
    for key in keys:
        path = work / f"out-{'ovt' if '+torch' in key else key}" / "landcover.tif"
        if key == "torch-f32" or not path.exists():
            continue
        same = total = 0
        with rasterio.open(ref) as a, rasterio.open(path) as b:
            for _, win in a.block_windows(1):
                x, y = a.read(1, window=win), b.read(1, window=win)
                same += int((x == y).sum())
                total += x.size
        print(f"  {key:<22}{100 * same / total:11.6f} % of {total} px ({total - same} differ)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="scene size (square), pixels")
    ap.add_argument("--runtimes", default="torch,onnxruntime,openvino", help="comma separated")
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch", type=int, default=0, help="tiles per forward for the bare forward (default 0: "
                    "predict's CPU default for the runtime and precision, RuntimeChoice.batch_size)")
    ap.add_argument("--bare-batches", type=int, default=6, help="batches timed per bare-forward run")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of every measurement")
    ap.add_argument("--workdir", default=None, help="where the scene and outputs go (default: a temp dir)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        kind, *r = a.child
        if kind == "bare":
            res = child_bare(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]))
        else:
            res = child_predict(r[0], r[1], r[2], r[3], r[4], r[5] == "1")
        res["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(res))
        return

    sys.path.insert(0, str(ROOT))
    from geoseg.model.package import resolve
    from geoseg.model.runtime import choose_runtime, prepare_graph

    work = Path(a.workdir or tempfile.mkdtemp(prefix="geoseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = str(resolve(a.model))
    todo = variants(a.runtimes.split(","))
    for rt, prec in todo:  # export (or find cached) every graph first: the runs below only load them
        t0 = time.perf_counter()
        choice = prepare_graph(model, choose_runtime(rt, "cpu", prec))
        print(f"{rt} {prec}: {choice.version}, graph {choice.graph} ready in {time.perf_counter() - t0:.1f} s")
    scene = work / f"mosaic_{a.size}.tif"
    if not scene.exists():
        t0 = time.perf_counter()
        n = make_scene(scene, a.size)
        print(f"made {scene.name} ({a.size}^2 x 9 uint16, {CELL}^2 crops of {n} real scenes) "
              f"in {time.perf_counter() - t0:.0f} s")
    cores = len(os.sched_getaffinity(0))
    print(f"model {model}, {cores} cores, {os.cpu_count()} CPUs, load average {load()}, {a.repeats} rounds",
          flush=True)
    res = measure(model, scene, work, todo, a.batch, a.bare_batches, a.repeats)
    first = next(iter(res["e2e"].values()))[0]
    print(f"\nscene {a.size}^2: {first['tiles']} tiles, computed px / scene px "
          f"{first['computed_pixels'] / first['scene_pixels']:.3f}, e2e batch {first['batch']}, "
          f"workers {first['workers']} x {first['threads']} threads; "
          f"bare: batch {a.batch or 'as predict'} x {a.bare_batches}")
    report(res, todo)
    agreement(work, [f"{r}-{p}" for r, p in todo] + ["openvino+torch-f32"])
    (work / "predict_throughput.json").write_text(json.dumps(res, indent=1))
    print(f"\nraw results: {work / 'predict_throughput.json'}")


if __name__ == "__main__":
    main()
