"""Programmatic Cloud-Optimized GeoTIFF validation: :func:`validate_cog`.

The checks follow GDAL's ``validate_cloud_optimized_geotiff.py`` (without needing the GDAL Python
bindings: everything is read through rasterio):

* the file is a GeoTIFF opened by GDAL's GTiff driver;
* the full-resolution image is tiled (not striped), and so is every other sub-image in the file (overviews,
  masks): the ``TileWidth`` tag of each IFD, read from the TIFF structure;
* a raster larger than 512 px in either direction has overviews, and they are *internal* (no ``.ovr``
  sidecar);
* the layout is the one GDAL's COG driver writes: ``LAYOUT=COG`` in the ``IMAGE_STRUCTURE`` metadata
  domain;
* IFD order: the main IFD comes first (at offset 8/16, or just after GDAL's "ghost" structural metadata
  header), overview IFDs follow in order of decreasing size;
* data order: the tile data of the smallest overview comes first and that of the full-resolution image
  last (``BLOCK_OFFSET_0_0`` / ``IFD_OFFSET`` items of the ``TIFF`` metadata domain, per overview), so a
  client reading the header and a low-resolution view fetches one contiguous range.

``validate_cog(path)`` returns the problems found as sentences; an empty list means the file is a valid
COG.  No torch, no dask.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["validate_cog", "is_cog"]

#: GDAL's COG driver writes this marker at offset 8 (classic TIFF) or 16 (BigTIFF).
_GHOST = b"GDAL_STRUCTURAL_METADATA_SIZE="


def _int_item(src, name: str, ovr: int | None = None) -> int | None:
    try:
        v = src.get_tag_item(name, "TIFF", bidx=1, ovr=ovr) if ovr is not None else \
            src.get_tag_item(name, "TIFF", bidx=1)
    except Exception:
        return None
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _ghost_header_end(path: Path) -> int | None:
    """End offset of GDAL's ghost structural-metadata header, or None when the file has none."""
    with open(path, "rb") as f:
        head = f.read(64)
    for start in (8, 16):
        if head[start:start + len(_GHOST)] == _GHOST:
            size_txt = head[start + len(_GHOST):start + len(_GHOST) + 6].split(b" ")[0]
            try:
                size = int(size_txt)
            except ValueError:
                return None
            # "GDAL_STRUCTURAL_METADATA_SIZE=XXXXXX bytes\n" then `size` bytes
            return start + len(_GHOST) + len(b"000000 bytes\n") + size
    return None


def _tiff_ifds(path: Path, limit: int = 64) -> list[tuple[int, bool, int, int]] | None:
    """(offset, tiled, width, height) of each IFD in the file's chain, read from the TIFF structure itself
    (tiled = the IFD has the TileWidth tag 322 rather than strips); None when the file is not a TIFF."""
    import struct

    with open(path, "rb") as f:
        head = f.read(16)
        if head[:2] not in (b"II", b"MM"):
            return None
        e = "<" if head[:2] == b"II" else ">"
        magic = struct.unpack(e + "H", head[2:4])[0]
        if magic == 42:
            big, off = False, struct.unpack(e + "I", head[4:8])[0]
        elif magic == 43:
            big, off = True, struct.unpack(e + "Q", head[8:16])[0]
        else:
            return None
        out: list[tuple[int, bool, int, int]] = []
        while off and len(out) < limit:
            f.seek(off)
            n = struct.unpack(e + ("Q" if big else "H"), f.read(8 if big else 2))[0]
            size = 20 if big else 12
            raw = f.read(n * size)
            tags: dict[int, int | None] = {}
            for i in range(n):
                ent = raw[i * size:(i + 1) * size]
                tag, typ = struct.unpack(e + "HH", ent[:4])
                val = ent[12:20] if big else ent[8:12]
                if typ == 3:  # SHORT
                    tags[tag] = struct.unpack(e + "H", val[:2])[0]
                elif typ in (4, 16):  # LONG, LONG8
                    tags[tag] = struct.unpack(e + ("Q" if typ == 16 else "I"), val[:8 if typ == 16 else 4])[0]
                else:
                    tags[tag] = None
            out.append((off, 322 in tags, int(tags.get(256) or 0), int(tags.get(257) or 0)))
            nxt = f.read(8 if big else 4)
            off = struct.unpack(e + ("Q" if big else "I"), nxt)[0] if len(nxt) == (8 if big else 4) else 0
        return out


def validate_cog(path: str | os.PathLike) -> list[str]:
    """Problems that make ``path`` not a valid Cloud-Optimized GeoTIFF (empty list: valid)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    p = Path(path)
    if not p.is_file():
        return [f"{p} does not exist"]
    problems: list[str] = []
    try:
        src = rasterio.open(p)
    except RasterioIOError as e:
        return [f"{p} cannot be opened by GDAL ({e})"]
    with src:
        if src.driver != "GTiff":
            return [f"{p.name} is a {src.driver} file, not a GeoTIFF"]
        width, height = src.width, src.height
        block_h, block_w = src.block_shapes[0]
        n_ovr = len(src.overviews(1))
        external = [f for f in src.files if f.lower().endswith(".ovr")]
        if external:
            problems.append(f"{p.name} has its overviews in an external file ({Path(external[0]).name}); "
                            "a COG holds them inside the TIFF")
        if n_ovr == 0 and (width > 512 or height > 512):
            problems.append(f"{p.name} is {width}x{height} px but has no overviews; a COG larger than "
                            "512 px needs internal overviews")
        layout = (src.tags(ns="IMAGE_STRUCTURE") or {}).get("LAYOUT")
        if layout != "COG":
            problems.append(f"{p.name} has no LAYOUT=COG in its IMAGE_STRUCTURE metadata "
                            f"(found {layout or 'none'}): not written by GDAL's COG driver")
        main_ifd = _int_item(src, "IFD_OFFSET")
        main_data = _int_item(src, "BLOCK_OFFSET_0_0")
        ovr_ifd = [_int_item(src, "IFD_OFFSET", i) for i in range(n_ovr)] if not external else []
        ovr_data = [_int_item(src, "BLOCK_OFFSET_0_0", i) for i in range(n_ovr)] if not external else []
    ifds = _tiff_ifds(p) or []
    if ifds and not ifds[0][1]:
        problems.insert(0, f"{p.name} is not tiled (strips of {block_w}x{block_h} px); a COG has square tiles")
    for k, (_, tiled, w, h) in enumerate(ifds[1:], start=1):
        if not tiled:  # overviews (and masks) in the file
            problems.append(f"sub-image {k} of {p.name} ({w}x{h}, an overview or mask) is not tiled")

    problems += _ifd_order_problems(p, main_ifd, ovr_ifd)
    problems += _data_order_problems(p, main_data, ovr_ifd, ovr_data)
    return problems


def _ifd_order_problems(p: Path, main_ifd: int | None, ovr_ifd: list[int | None]) -> list[str]:
    """IFD order: main first (at the start of the file), then the overviews from the largest to the smallest."""
    if main_ifd is None:
        return [f"{p.name}: GDAL reports no IFD offset; cannot check the IFD order"]
    problems = []
    if main_ifd not in (8, 16):
        ghost_end = _ghost_header_end(p)
        if ghost_end is None or main_ifd > ghost_end + 8:
            problems.append(f"the main IFD of {p.name} is at offset {main_ifd}, not at the start of the "
                            "file: a reader needs a second request to find it")
    prev = main_ifd
    for i, off in enumerate(ovr_ifd):
        if off is None:
            continue
        if off < prev:
            problems.append(f"the IFD of overview {i} (offset {off}) of {p.name} comes before the IFD "
                            f"{'of the main image' if i == 0 else f'of overview {i - 1}'} ({prev}); "
                            "IFDs must all be at the start, main image first")
        prev = off
    return problems


def _data_order_problems(p: Path, main_data: int | None, ovr_ifd: list[int | None],
                         ovr_data: list[int | None]) -> list[str]:
    """Data order: the smallest overview's tiles first, full resolution last."""
    known = [d for d in ovr_data if d is not None]
    if main_data is None or not ovr_data or len(known) != len(ovr_data):
        return []
    problems = []
    last_ifd = ovr_ifd[-1] if ovr_ifd else None
    if last_ifd is not None and known[-1] < last_ifd:
        problems.append(f"the tile data of the smallest overview of {p.name} precede its IFD")
    for i in range(len(known) - 2, -1, -1):
        if known[i] < known[i + 1]:
            problems.append(f"the tile data of overview {i} of {p.name} precede those of the smaller "
                            f"overview {i + 1}; the smallest overview's data must come first")
    if main_data < known[0]:
        problems.append(f"the full-resolution tile data of {p.name} (offset {main_data}) precede the "
                        f"overviews' (offset {known[0]}); overview data must come first")
    return problems


def is_cog(path: str | os.PathLike) -> bool:
    """``True`` when :func:`validate_cog` finds no problem."""
    return not validate_cog(path)
