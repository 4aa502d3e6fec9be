#!/usr/bin/env python
"""Class-map agreement of one city fed in every input form geoseg reads (issue 14's done-when figures).

For each city (the shipped Hong Kong sample and the OSCD scenes of ``../shared/data/oscd-dw`` when present) a
``--size``² crop is reprojected once onto UTM at 10 m (the *reference*), its bands are written as a product
would hold them (20 m bands by 2x2 mean at 20 m, 60 m bands at 60 m) and then fed to ``predict_scene`` with
the default model as:

* ``stacked``: the product's bands stacked by hand onto 10 m (a gdalwarp-style bilinear resample), i.e. the
  multiband GeoTIFF a user makes today;
* ``safe-0204``: a SAFE folder of processing baseline 02.04 (JP2, no offset);
* ``safe-0400-zip``: a SAFE zip of baseline 04.00 (DN + 1000, RADIO_ADD_OFFSET -1000);
* ``stac-0400``: a STAC Item of per-band COGs (20 m bands at 20 m, DN + 1000, raster:bands offset -0.1);
* ``stac-1.1``: the same in STAC 1.1 ``bands`` form without offset;
* ``bare-x1000``: the stacked GeoTIFF divided by 10 (reflectance x 1000, no metadata): must be refused, and
  with the flag the refusal names (``--input-scale 10``) map like the original.

Printed: agreement (over pixels valid in either map) of every form with ``stacked`` (goal >= 99.5 %) and of
``stacked`` with the reference
(what keeping the 20 m bands at 20 m costs against 10 m data).

    python benchmarks/input_agreement.py                  # Hong Kong + up to 6 OSCD cities, 480 px
    python benchmarks/input_agreement.py --cities 0 --size 240
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoseg import predict_scene  # noqa: E402
from geoseg.errors import InputError  # noqa: E402
from geoseg.testing_sources import SAMPLE, write_reference, write_safe, write_stac_item, write_stacked  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "oscd-dw"
FORMS = ("safe-0204", "safe-0400-zip", "stac-0400", "stac-1.1", "bare-x1000")


def _map(result) -> np.ndarray:
    with rasterio.open(result.landcover) as src:
        return src.read(1)


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    """Share of identical class codes over the pixels valid (not nodata 255) in either map."""
    either = (a != 255) | (b != 255)
    return float((a == b)[either].mean()) if either.any() else 1.0


def _x1000(stacked: Path, out: Path) -> Path:
    with rasterio.open(stacked) as src:
        profile, data, desc = src.profile, src.read(), src.descriptions
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.where(data > 0, np.maximum(np.round(data / 10.0), 1), 0).astype(data.dtype))
        dst.descriptions = desc
    return out


def _scene(form: str, d: Path, ref: Path, stacked: Path) -> Path:
    if form == "safe-0204":
        return write_safe(d, ref, baseline="02.04")
    if form == "safe-0400-zip":
        return write_safe(d, ref, baseline="04.00", as_zip=True)
    if form == "stac-0400":
        return write_stac_item(d / "stac-0400", ref, add_offset=True)
    if form == "stac-1.1":
        return write_stac_item(d / "stac-11", ref, style="stac-1.1")
    return _x1000(stacked, d / "x1000.tif")


def city(name: str, image: Path, size: int, work: Path) -> dict[str, float | str]:
    d = work / name
    d.mkdir()
    ref = write_reference(d / "reference.tif", size=size, sample=image)
    stacked = write_stacked(d / "stacked.tif", ref)
    run = dict(progress=False, overwrite=True, cloud_mask="none")  # the fixtures carry cloud masks: not measured here
    base = _map(predict_scene(stacked, "default", d / "out-stacked", **run))
    row: dict[str, float | str] = {"reference": _agree(base, _map(predict_scene(ref, "default", d / "o-ref", **run)))}
    for form in FORMS:
        scene = _scene(form, d, ref, stacked)
        if form == "bare-x1000":
            try:
                predict_scene(scene, "default", d / f"o-{form}", **run)
                row["refused"] = "NO"
            except InputError as exc:
                row["refused"] = "yes" if "--input-scale 10" in str(exc) else f"other: {exc}"
            got = _map(predict_scene(scene, "default", d / f"o-{form}", input_scale=10, **run))
        else:
            got = _map(predict_scene(scene, "default", d / f"o-{form}", **run))
        row[form] = _agree(got, base)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=480, help="crop side in 10 m pixels (multiple of 6)")
    ap.add_argument("--cities", type=int, default=6, help="how many OSCD cities besides Hong Kong")
    args = ap.parse_args()
    cities = [("hongkong-sample", SAMPLE)]
    if SHARED.is_dir() and args.cities:
        dated = sorted(p for p in SHARED.glob("*/*/image.tif") if p.parts[-3] != "hongkong")
        by_city: dict[str, Path] = {}
        for p in dated:
            by_city.setdefault(p.parts[-3], p)
        cities += [(f"{c}-{p.parts[-2]}", p) for c, p in list(by_city.items())[: args.cities]]
    t0 = time.perf_counter()
    cols = ("reference", *FORMS, "refused")
    print(f"{'city':<24}" + "".join(f"{c:>15}" for c in cols))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, image in cities:
            row = city(name, image, args.size, Path(tmp))
            rows.append(row)
            print(f"{name:<24}" + "".join(f"{row[c]:>15.4%}" if isinstance(row[c], float) else f"{row[c]:>15}"
                                          for c in cols), flush=True)
    print(f"{'minimum':<24}" + "".join(f"{min(float(r[c]) for r in rows):>15.4%}" for c in cols[:-1]))
    print(f"({len(rows)} cities, {args.size}² px each, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
