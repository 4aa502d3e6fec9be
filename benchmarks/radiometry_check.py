"""How well the radiometric input check (geoseg.io.radiometry) tells right from wrong inputs on real scenes.

Every 9-band L1C scene of ``shared/data`` (OSCD cities and the Slovenia patch) is checked as it is and in
five wrong forms: DN // 10 (reflectance x 1000), + 1000 (baseline-04.00 offset without metadata), float
reflectance 0..1, bands reversed, B2/B4 swapped.  Prints, per form, how many scenes get the right verdict.

    .venv/bin/python benchmarks/radiometry_check.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import rasterio

from geoseg.errors import BandMismatchError, InputError
from geoseg.io.radiometry import decide_transform
from geoseg.model.package import read_card

FORMS = {
    "as is": (lambda d: d, None),
    "x1000 (//10)": (lambda d: (d // 10).astype(np.uint16), "scale 10"),
    "+1000 offset": (lambda d: np.where(d > 0, d + 1000, 0).astype(np.uint16), "offset -1000"),
    "float 0..1": (lambda d: (d / 10000.0).astype(np.float32), "scale 10000"),
    "reversed": (lambda d: d[::-1].copy(), "order"),
    "B2/B4 swapped": (lambda d: d[[2, 1, 0, 3, 4, 5, 6, 7, 8]].copy(), "order"),
}


def verdict(path: Path, card) -> str | None:
    try:
        t = decide_transform(str(path), list(range(1, 10)), card.bands, means=card.normalization.a,
                             stds=card.normalization.b, dn_scale=1e-4, input_scale="auto")
    except BandMismatchError:
        return "order"
    except InputError as e:
        return f"error: {e}"
    if t.is_identity:
        return None
    return f"scale {t.scale[0]:g}" if t.offset[0] == 0 else f"offset {t.offset[0]:g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/geoseg-radiometry-check")
    args = ap.parse_args()
    card = read_card("default")
    scenes = sorted(glob.glob(f"{args.data}/*/*/*/image.tif")) + sorted(glob.glob(f"{args.data}/*/*/image.tif"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    right = dict.fromkeys(FORMS, 0)
    seconds = []
    for s in scenes:
        with rasterio.open(s) as src:
            data, profile = src.read(), src.profile
        for form, (fn, expected) in FORMS.items():
            d = fn(data)
            p = work / "scene.tif"
            with rasterio.open(p, "w", **(profile | {"dtype": d.dtype.name})) as dst:
                dst.write(d)
            t0 = time.perf_counter()
            got = verdict(p, card)
            seconds.append(time.perf_counter() - t0)
            right[form] += got == expected
            if got != expected and form != "B2/B4 swapped":
                print(f"  {Path(s).parent.parent.name}/{Path(s).parent.name} {form}: got {got}, expected {expected}")
    for form, n in right.items():
        print(f"{form:<16} {n:>3} / {len(scenes)} right")
    print(f"check time per scene: median {np.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
