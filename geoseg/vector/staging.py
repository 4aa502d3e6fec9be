"""The run's staging folder: what the block tasks and the seam merge hand on, as ``.npz`` files of plain arrays
(no pickle: ``np.load(allow_pickle=False)`` reads them back), geometries as packed WKB; and heap trimming."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import shapely


def save_npz(path: str, **arrays: Any) -> None:
    """Plain arrays (no pickle: ``np.load(allow_pickle=False)`` reads them back), written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def packed(prefix: str, geoms: np.ndarray) -> dict[str, np.ndarray]:
    """Geometries (or their WKB, bytes-like) as one WKB byte array and the length of each."""
    wkb = geoms if len(geoms) and not isinstance(geoms[0], shapely.Geometry) else shapely.to_wkb(geoms)
    lengths = np.fromiter((len(b) for b in wkb), dtype=np.int64, count=len(wkb))
    # one geometry: a view of its WKB (np.savez writes it in chunks), so a huge polygon is not copied
    blob = np.frombuffer(wkb[0] if len(wkb) == 1 else b"".join(wkb), dtype=np.uint8)
    return {f"{prefix}_blob": blob, f"{prefix}_len": lengths}


def unpacked(z, prefix: str) -> np.ndarray:
    """The WKB of each geometry (object array of bytes) from :func:`packed` arrays."""
    blob, lengths = z[f"{prefix}_blob"], z[f"{prefix}_len"]
    ends = np.cumsum(lengths)
    out = np.empty(lengths.size, dtype=object)
    out[:] = [blob[a:b].tobytes() for a, b in zip(ends - lengths, ends)]  # no copy of the whole blob
    return out


def stage_polygons(path: str, ids: np.ndarray, values: np.ndarray, geoms: np.ndarray, area: np.ndarray,
                   perimeter: np.ndarray) -> None:
    """Finished polygons (raster CRS; geometries or WKB) with their class, area and perimeter, in id order:
    what :func:`geoseg.vector.write.write_staged` reads."""
    order = np.argsort(ids, kind="stable")
    save_npz(path, id=ids[order], value=values[order], **packed("wkb", geoms[order]), area_m2=area[order],
             perimeter_m=perimeter[order])


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    The merge thread and the writer allocate and free large geometry buffers in turn, from two
    malloc arenas; without trimming, the freed pages stay in the process (about 100 MiB of the
    peak on a 10k² raster).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)




_MALLOC_TRIM: Any = None
