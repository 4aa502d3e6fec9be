"""Measuring the runtimes on this machine: bare-forward Mpx/s per runtime and batch size, and agreement
with torch eager on a fixed input (``geoseg model bench``, ``benchmarks/runtimes.py``).

The fixed input is real data when the shipped Hong Kong tile is present and has the
model's bands (normalised with the card), else seeded random normal values.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.model.backends import cpu_has_bf16, installed_runtimes
from geoseg.model.card import ModelCard
from geoseg.model.package import read_card, resolve
from geoseg.model.runtime import configure_threads, get_predictor

#: The shipped real 9-band Sentinel-2 tile (present in a source checkout).
REAL_TILE = Path(__file__).resolve().parents[2] / "tiles" / "hongkong_20160927" / "image.tif"


@dataclass
class Row:
    runtime: str
    precision: str
    batch: int
    mpx_s: float
    agreement: float | None  # share of pixels whose class equals torch eager's
    max_prob_diff: float | None


def variants() -> list[tuple[str, str]]:
    """(runtime, precision) pairs to measure here: torch eager (contiguous NCHW, the reference), torch
    channels_last (the torch runtime's CPU default), every other installed runtime at f32, and torch and
    OpenVINO bf16 where the CPU has native BF16."""
    have = installed_runtimes()
    out = [("torch", "f32"), ("torch-channels-last", "f32")]
    out += [(r, "f32") for r in ("onnxruntime", "openvino") if r in have]
    if cpu_has_bf16():
        out += [("torch-channels-last", "bf16")] + ([("openvino", "bf16")] if "openvino" in have else [])
    return out


def fixed_input(card: ModelCard, tile: int) -> tuple[np.ndarray, str]:
    """(B, C, tile, tile) normalised input: the real tile's corners and their flips when available."""
    if REAL_TILE.exists():
        import rasterio

        with rasterio.open(REAL_TILE) as src:
            if src.count == card.in_channels and src.height >= tile and src.width >= tile:
                data = src.read().astype(np.float32)
                h, w = data.shape[1:]
                tiles = [data[:, :tile, :tile], data[:, h - tile :, w - tile :]]
                tiles += [t[:, :, ::-1] for t in tiles] + [t[:, ::-1, :] for t in tiles]
                x = np.stack([card.normalization.apply(t) for t in tiles])
                return np.ascontiguousarray(x), f"real: {REAL_TILE.name} (6 tiles of {tile}²)"
    x = np.random.default_rng(0).standard_normal((4, card.in_channels, tile, tile)).astype(np.float32)
    return x, f"random normal (4 tiles of {tile}²)"


def make_predictor(path: str, runtime: str, precision: str) -> Any:
    """``torch`` here is torch eager in contiguous NCHW (the reference); ``torch-channels-last`` the torch
    runtime's CPU default."""
    if runtime.startswith("torch"):
        from geoseg.model.runtime import _threads_now
        from geoseg.model.torch_backend import set_threads, torch_predictor

        set_threads(_threads_now())
        return torch_predictor(path, "cpu", None, channels_last=runtime == "torch-channels-last",
                               precision=precision)
    return get_predictor(path, "cpu", None, runtime, precision)


def time_forward(pred: Any, x: np.ndarray, repeats: int) -> float:
    """Median seconds of one forward of ``x`` (after one warm-up call)."""
    pred(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(class agreement, max probability difference) of ``got`` with ``ref``."""
    return float((ref.argmax(1) == got.argmax(1)).mean()), float(np.abs(ref - got).max())


def run_bench(model: str, batches: tuple[int, ...] = (1, 2, 4), tile: int | None = None, repeats: int = 3,
              threads: int | None = None, only: list[tuple[str, str]] | None = None,
              reference: np.ndarray | None = None) -> dict[str, Any]:
    """Every variant's Mpx/s per batch size and its agreement with torch eager (contiguous, f32).

    ``reference``: torch eager's probabilities of the fixed input, when computed elsewhere (then this
    process need not load torch); returned under ``"reference"`` when computed here.
    """
    path = str(resolve(model))
    card = read_card(path)
    tile = tile or card.tile_size
    n_threads = threads or os.cpu_count() or 1
    configure_threads(n_threads)
    x, source = fixed_input(card, tile)
    computed = reference is None
    ref = make_predictor(path, "torch", "f32")(x) if reference is None else reference
    rows: list[Row] = []
    for runtime, precision in only or variants():
        pred = make_predictor(path, runtime, precision)
        agreement, diff = compare(ref, pred(x))
        for b in batches:
            xb = x[np.arange(b) % len(x)]
            seconds = time_forward(pred, np.ascontiguousarray(xb), repeats)
            rows.append(Row(runtime, precision, b, b * tile * tile / seconds / 1e6, agreement, diff))
    return {"model": card.id, "path": path, "tile": tile, "threads": n_threads, "input": source,
            "repeats": repeats, "rows": [asdict(r) for r in rows], **({"reference": ref} if computed else {})}


def format_table(result: dict[str, Any]) -> str:
    base = {r["batch"]: r["mpx_s"] for r in result["rows"] if r["runtime"] == "torch"}
    lines = [f"model {result['model']}, tiles {result['tile']}², {result['threads']} threads, "
             f"agreement on {result['input']}",
             f"{'runtime':<20} {'precision':<9} {'batch':>5} {'Mpx/s':>7} {'x torch':>7} {'classes = eager':>15} "
             f"{'max |dp|':>9}"]
    for r in result["rows"]:
        ratio = r["mpx_s"] / base[r["batch"]] if r["batch"] in base else float("nan")
        lines.append(f"{r['runtime']:<20} {r['precision']:<9} {r['batch']:>5} {r['mpx_s']:>7.2f} {ratio:>7.2f} "
                     f"{100 * r['agreement']:>14.3f}% {r['max_prob_diff']:>9.2e}")
    return "\n".join(lines)


def dumps(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "reference"}, indent=2)
