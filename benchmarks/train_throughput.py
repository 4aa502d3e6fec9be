#!/usr/bin/env python
"""Training throughput of the default architecture: the bare optimiser step per precision and memory format,
and end-to-end ``geoseg train`` steps/s with its background data loader.

The default architecture (workflows/train_default.yaml, geoseg/model/builtin/default): Unet/resnet18,
encoder_depth 4, decoder (128, 64, 32, 16), 9 bands, 9 classes, batch 8 of 256 x 256 windows, loss
``ce:1,dice:0.5``, AdamW.

1. **Step**: forward + backward + AdamW step through :class:`geoseg.training.precision.Stepper` (the code
   ``geoseg train`` runs) on fixed random batches, in Mpx/s (window pixels per second), for
   fp32 contiguous (what ``geoseg train`` did before channels_last), fp32 channels_last, and bf16 autocast
   contiguous / channels_last where the CPU has native BF16 (``--emulated-bf16`` measures them anyway).
   Each variant runs in its own child process (its own peak RSS); the variants are interleaved and
   repeated (``--repeats``), the median step time of each is reported with its ratio to fp32 contiguous.
2. **Loader**: windows of the shipped Hong Kong sample (tiles/hongkong_20160927, 9 bands, its Dynamic World
   label) drawn, cropped, augmented and normalised as training does, batches/s on one thread.
3. **End to end**: ``geoseg.training.train`` with the default workflow's config on that sample (one epoch of
   ``--train-steps`` steps, a block split for validation), steps/s of the epoch's optimisation part
   (``train_seconds`` in the log: the loader runs in its background thread meanwhile).

    python benchmarks/train_throughput.py                    # 3 repeats of 4 timed steps per variant
    python benchmarks/train_throughput.py --repeats 5 --steps 6 --train-steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tiles" / "hongkong_20160927"
WORKFLOW = ROOT / "workflows" / "train_default.yaml"
BATCH, WINDOW, BANDS, CLASSES = 8, 256, 9, 9
ARCH_PARAMS = {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}
VARIANTS = [("f32", False), ("f32", True), ("bf16", False), ("bf16", True)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _label(prec: str, cl: bool) -> str:
    return f"{'fp32' if prec == 'f32' else 'bf16 autocast'}, {'channels_last' if cl else 'contiguous'}"


def child_step(prec: str, channels_last: bool, steps: int, threads: int) -> dict:
    """The times of ``steps`` timed steps after 2 warm-up steps."""
    import torch

    from geoseg.model.registry import build_model
    from geoseg.training.losses import CombinedLoss
    from geoseg.training.precision import Stepper, StepPrecision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sp = StepPrecision(prec, "cpu", torch.bfloat16 if prec == "bf16" else None, channels_last)
    net = build_model("Unet", "resnet18", BANDS, CLASSES, **ARCH_PARAMS).to(memory_format=sp.memory_format)
    net.train()
    criterion = CombinedLoss({"ce": 1.0, "dice": 0.5}, CLASSES)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    stepper = Stepper(sp, net, criterion, opt)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, BANDS, WINDOW, WINDOW, generator=g).contiguous(memory_format=sp.memory_format)
    t = torch.randint(0, CLASSES, (BATCH, WINDOW, WINDOW), generator=g)
    for _ in range(2):
        stepper.step(x, t)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        stepper.step(x, t)
        times.append(time.perf_counter() - t0)
    return {"step_seconds": times}


def _config(work: Path, prec: str, memory_format: str, steps: int, threads: int):
    from geoseg.training.config import build_config

    return build_config(WORKFLOW, {
        "images": [str(SAMPLE / "image.tif")], "labels": "{dir}/dw_label.tif", "exclude": [],
        "split": "blocks", "val_block": 256, "val_fraction": 0.2, "val_buffer": 16, "val_window": 256,
        "samples_per_epoch": steps * BATCH, "epochs": 1, "threads": threads, "precision": prec,
        "memory_format": memory_format, "output": str(work / f"model-{prec}-{memory_format}"),
    })


def child_train(work: str, prec: str, memory_format: str, steps: int, threads: int) -> dict:
    import torch  # noqa: F401  - imports are not part of the measured epoch

    from geoseg.training.loop import train

    res = train(_config(Path(work), prec, memory_format, steps, threads), overwrite=True, log=None)
    h = res.history[0]
    from geoseg.model.package import read_card

    return {"train_seconds": h["train_seconds"], "steps": steps, "precision": h["precision"],
            "memory_format": read_card(res.output).extra["training"]["memory_format"]}


def child_loader(work: str, batches: int) -> dict:
    import numpy as np
    import torch

    from geoseg.training.batches import batch_windows, make_batch
    from geoseg.training.data import WindowSampler, band_stats, find_pairs, load_scene
    from geoseg.training.network import load_classes

    cfg = _config(Path(work), "f32", "channels_last", batches, 1)
    classes = load_classes(cfg, None)
    scene = load_scene(find_pairs(cfg)[0], list(cfg.bands), classes, cfg)
    from geoseg.model.card import Normalization

    norm = Normalization("meanstd", *band_stats([scene]))
    sampler = WindowSampler([scene], len(classes), WINDOW, cfg.sampling, cfg.balanced_fraction, 0)
    rng = np.random.default_rng(0)
    wins = sampler.draw(batches * BATCH, rng)
    t0 = time.perf_counter()
    for w in batch_windows(wins, BATCH):
        make_batch([scene], w, WINDOW, norm, rng, cfg, torch.channels_last)
    return {"batches_per_s": batches / (time.perf_counter() - t0)}


def run_child(*args: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"child {args[0]} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _run_child_mode(child: list[str]) -> None:
    kind, *rest = child
    if kind == "step":
        res = child_step(rest[0], rest[1] == "1", int(rest[2]), int(rest[3]))
    elif kind == "train":
        res = child_train(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]))
    else:
        res = child_loader(rest[0], int(rest[1]))
    res["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(res))


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# long: one report, step table then loader then end to end
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each step variant")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant and repeat")
    ap.add_argument("--train-steps", type=int, default=8, help="optimiser steps of the end-to-end epoch")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every available core)")
    ap.add_argument("--emulated-bf16", action="store_true",
                    help="measure the bf16 variants on a CPU without native BF16 too (emulated: slow)")
    ap.add_argument("--skip-train", action="store_true", help="only the step table and the loader")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _run_child_mode(a.child)
        return

    sys.path.insert(0, str(ROOT))
    from geoseg.model.backends import cpu_has_bf16

    threads = a.threads or len(os.sched_getaffinity(0))
    native = cpu_has_bf16()
    variants = [v for v in VARIANTS if v[0] == "f32" or native or a.emulated_bf16]
    print(f"default architecture: Unet/resnet18 depth 4, {BANDS} bands, batch {BATCH} x {WINDOW}^2; "
          f"{threads} torch threads; native BF16: {'yes' if native else 'no (avx512_bf16/amx_bf16 absent)'}")
    print(f"load average at start: {_load()}")
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    rss: dict[tuple[str, bool], float] = {}
    for r in range(a.repeats):
        for v in variants:
            res = run_child("step", v[0], "1" if v[1] else "0", str(a.steps), str(threads))
            times[v] += res["step_seconds"]
            rss[v] = max(rss.get(v, 0.0), res["peak_rss_mb"])
            print(f"  repeat {r + 1}/{a.repeats} {_label(*v)}: "
                  f"{' '.join(f'{x:.2f}' for x in res['step_seconds'])} s/step, load {_load()}", flush=True)
    px = BATCH * WINDOW * WINDOW
    base = statistics.median(times[VARIANTS[0]])
    print("\n| training step | Mpx/s | s/step (median, min-max) | x fp32 contiguous | peak RSS MB |")
    print("|---|---|---|---|---|")
    for v in variants:
        med = statistics.median(times[v])
        print(f"| {_label(*v)}{' (emulated)' if v[0] == 'bf16' and not native else ''} | {px / med / 1e6:.3f} | "
              f"{med:.2f} ({min(times[v]):.2f}-{max(times[v]):.2f}) | {base / med:.2f} | {rss[v]:.0f} |")
    if not native and not a.emulated_bf16:
        print("bf16 rows: not measured (no native BF16 on this CPU; --emulated-bf16 measures emulation)")

    work = tempfile.mkdtemp(prefix="geoseg-train-bench-")
    loader = run_child("loader", work, "12")
    step_best = px / min(statistics.median(times[v]) for v in variants)
    print(f"\nloader (one thread, crop + augment + normalise, channels_last): {loader['batches_per_s']:.1f} "
          f"batches/s = {loader['batches_per_s'] * px / 1e6:.1f} Mpx/s vs the fastest step's "
          f"{step_best / 1e6:.3f} Mpx/s")
    if a.skip_train:
        return
    print(f"\nend-to-end geoseg train (workflows/train_default.yaml on {SAMPLE.name}, {a.train_steps} steps):")
    print("| run | steps/s | Mpx/s | x fp32 contiguous | peak RSS MB |")
    print("|---|---|---|---|---|")
    e2e_base = None
    runs = [("f32", "contiguous"), ("f32", "channels_last"), ("auto", "auto")]  # auto, auto: the default
    for prec, fmt in runs:
        res = run_child("train", work, prec, fmt, str(a.train_steps), str(threads))
        sps = res["steps"] / res["train_seconds"]
        e2e_base = e2e_base or sps
        print(f"| precision {prec} -> {res['precision']}, memory_format {fmt} -> {res['memory_format']} | {sps:.3f} | "
              f"{sps * px / 1e6:.3f} | {sps / e2e_base:.2f} | {res['peak_rss_mb']:.0f} |")
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
