"""Cloud masks as values: which pixels of a scene a product's own mask (or the user's) marks as not
observed, read window by window on the scene's grid.

A :class:`CloudMask` is plain strings and numbers (picklable: dask tasks get it, open it themselves).
Its ``dataset`` is a GDAL dataset name ON THE SCENE'S GRID (same CRS, transform and size as the
``SceneSource.dataset``): a VRT that resamples the product's mask NEAREST onto that grid (class codes and
bit fields are never interpolated), the user's raster itself, or a warped VRT of it.

The product masks (docs/clouds.md):

- ``scl``: Sentinel-2 L2A Scene Classification (Sen2Cor), classes 0 no data, 1 saturated or defective,
  3 cloud shadows, 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus (2 dark area,
  4 vegetation, 5 not vegetated, 6 water, 7 unclassified and 11 snow stay observed).
- ``msk_classi``: Sentinel-2 L1C ``MSK_CLASSI_B00.jp2`` (baseline >= 04.00; band 1 opaque clouds, band 2
  cirrus, band 3 snow/ice), read as ONE derived band: bit 0 = band 1 non-zero, bit 1 = band 2 non-zero.
- ``msk_clouds``: Sentinel-2 L1C ``MSK_CLOUDS_B00.gml`` (before 04.00): OPAQUE / CIRRUS polygons,
  rasterised per window (pixel centres) into bit 0 / bit 1.  ``dataset`` is then a source-less VRT on the
  scene's grid whose metadata item ``GEOSEG_MSK_CLOUDS`` names the GML (a path or ``/vsizip/`` path).
- ``qa_pixel``: Landsat Collection 2 ``QA_PIXEL`` bits 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow
  (bit 0 fill is the bands' nodata already).
- ``raster``: ``--cloud-mask RASTER``, any non-zero value is masked (its nodata value is not).
- ``detected``: ``--cloud-mask detect``, a coarse mask geoseg's optional detector (geoseg.io.cloud_detector,
  s2cloudless) wrote for this run, non-zero = masked; ``detector`` holds what detected it and its settings.

numpy + rasterio (and the standard library) only: no torch, no dask.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RioWindow

from geoseg.errors import CloudMaskError, MissingCloudMaskError
from geoseg.io.grid import Window
from geoseg.io.warp import Grid, same_lattice, warped

__all__ = ["CloudMask", "read_cloud_mask", "user_cloud_mask", "KINDS", "SCL_CLASSES", "SCL_MASKED",
           "QA_PIXEL_BITS", "QA_PIXEL_MASKED", "CLASSI_BITS", "MSK_CLOUDS_TYPES", "GML_KEY", "gml_polygons"]

KINDS = ("scl", "msk_classi", "msk_clouds", "qa_pixel", "raster", "detected")

#: Sen2Cor Scene Classification values (ESA L2A product specification)
SCL_CLASSES = {0: "no data", 1: "saturated or defective", 2: "dark area pixels", 3: "cloud shadows",
               4: "vegetation", 5: "not vegetated", 6: "water", 7: "unclassified",
               8: "cloud medium probability", 9: "cloud high probability", 10: "thin cirrus", 11: "snow"}
SCL_MASKED = (0, 1, 3, 8, 9, 10)

#: Landsat Collection 2 QA_PIXEL single bits (bits 8-15 are 2-bit confidences)
QA_PIXEL_BITS = {0: "fill", 1: "dilated cloud", 2: "cirrus", 3: "cloud", 4: "cloud shadow", 5: "snow",
                 6: "clear", 7: "water"}
QA_PIXEL_MASKED = (1, 2, 3, 4)

#: the bit each MSK_CLASSI band / MSK_CLOUDS mask type sets in the one mask band geoseg reads
CLASSI_BITS = {0: "opaque clouds", 1: "cirrus"}
MSK_CLOUDS_TYPES = ("OPAQUE", "CIRRUS")  # bit 0, bit 1
GML_KEY = "GEOSEG_MSK_CLOUDS"

_GML = "{http://www.opengis.net/gml/3.2}"
_EOP = "{http://www.opengis.net/eop/2.0}"


@dataclass(frozen=True)
class CloudMask:
    """One scene's cloud mask: a GDAL dataset on the scene's grid and which stored values mean masked
    (``masked_values``: exact values; ``masked_bits``: any of these bits set; ``nonzero``: any value but
    0 and the band's nodata).  ``origin`` is the file to name in messages.  ``detector``: for kind
    ``detected``, (name, value) pairs of the detector and its settings (recorded in run.json)."""

    dataset: str
    kind: str
    origin: str
    band: int = 1
    masked_values: tuple[int, ...] = ()
    masked_bits: tuple[int, ...] = ()
    nonzero: bool = False
    detector: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"cloud mask kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not (self.masked_values or self.masked_bits or self.nonzero):
            raise ValueError("a CloudMask needs masked_values, masked_bits or nonzero")

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``L2A SCL classes 0,1,3,8,9,10 (no data, ...)``."""
        parts = []
        if self.masked_values:
            names = [SCL_CLASSES.get(v, "?") for v in self.masked_values] if self.kind == "scl" else []
            label = "L2A SCL classes" if self.kind == "scl" else f"{self.origin} values"
            parts.append(f"{label} {_ints(self.masked_values)}" + (f" ({', '.join(names)})" if names else ""))
        if self.masked_bits:
            if self.kind == "qa_pixel":
                names = [QA_PIXEL_BITS.get(b, "?") for b in self.masked_bits]
                parts.append(f"Landsat QA_PIXEL bits {_ints(self.masked_bits)} ({', '.join(names)})")
            elif self.kind == "msk_classi":
                names = [CLASSI_BITS.get(b, "?") for b in self.masked_bits]
                parts.append(f"L1C MSK_CLASSI {', '.join(names)} (snow/ice not masked)")
            elif self.kind == "msk_clouds":
                types = [MSK_CLOUDS_TYPES[b] if b < len(MSK_CLOUDS_TYPES) else "?" for b in self.masked_bits]
                parts.append(f"L1C MSK_CLOUDS polygons {', '.join(types)}")
            else:
                parts.append(f"{self.origin} bits {_ints(self.masked_bits)}")
        if self.kind == "detected":
            d = dict(self.detector)
            settings = ", ".join(f"{k} {d[k]}" for k in ("threshold", "average_over", "dilation_size") if k in d)
            parts = [f"clouds detected by {d.get('detector', '?')} {d.get('version', '')} at "
                     f"{d.get('resolution_m', '?')} m ({settings}; {d.get('cloud_fraction', 0):.1%} of the scene)"]
        elif self.nonzero:
            parts.append(f"cloud mask {self.origin} band {self.band}: non-zero = masked")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """What run.json records: kind, origin, band, the masked values/bits and the description."""
        out = {"kind": self.kind, "origin": self.origin, "band": self.band, "values": list(self.masked_values),
               "bits": list(self.masked_bits), "nonzero": self.nonzero, "description": self.describe()}
        if self.detector:
            out["detector"] = dict(self.detector)
        return out

    def decode(self, raw: np.ndarray, nodata: float | None = None) -> np.ndarray:
        """``raw`` stored values -> bool, True = masked (never where ``raw`` is the band's ``nodata``)."""
        out = np.zeros(raw.shape, dtype=bool)
        if self.masked_values:
            out |= np.isin(raw, np.asarray(self.masked_values))
        if self.masked_bits:
            bits = sum(1 << b for b in self.masked_bits)
            out |= (raw.astype(np.int64) & bits) != 0
        if self.nonzero:
            out |= raw != 0
        if nodata is not None:
            out &= raw != nodata
        return out


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def read_cloud_mask(mask: CloudMask, window: Window) -> np.ndarray:
    """``(window.height, window.width)`` bool, True = masked, False outside the raster (``window`` may
    overhang it, as io.raster.read_window allows).  Opens ``mask.dataset`` itself."""
    out = np.zeros((window.height, window.width), dtype=bool)
    try:
        src = rasterio.open(mask.dataset)
    except RasterioIOError as exc:
        raise CloudMaskError(f"cannot read the cloud mask {mask.origin} ({_first_line(exc)}); the file is "
                             "damaged or was moved: restore it, or run without the cloud mask") from None
    with src:
        inside = window.intersection(Window(0, 0, src.height, src.width))
        if inside is None:
            return out
        rs, cs = inside.slices_in(window)
        if mask.kind == "msk_clouds":
            raw = _rasterize_gml(src.tags().get(GML_KEY, ""), src.transform, inside, mask.origin)
            nodata = None
        else:
            rio_win = RioWindow(inside.col_off, inside.row_off, inside.width, inside.height)
            try:
                raw = src.read(mask.band, window=rio_win)
            except RasterioIOError as exc:
                raise CloudMaskError(f"cannot read the cloud mask {mask.origin} ({_first_line(exc)}); the file "
                                     "is truncated or damaged: download the product again") from None
            nodata = src.nodatavals[mask.band - 1]
        out[rs, cs] = mask.decode(raw, nodata)
    return out


# -- MSK_CLOUDS_B00.gml (Sentinel-2 L1C before baseline 04.00) --


def _read_bytes(path: str) -> bytes:
    """The bytes of a local path or of a ``/vsizip/ZIP/MEMBER`` path (how the SAFE reader names files)."""
    if path.startswith("/vsizip/"):
        rest = path[len("/vsizip/"):]
        cut = rest.lower().find(".zip/")
        if cut < 0:
            raise FileNotFoundError(path)
        with zipfile.ZipFile(rest[: cut + 4]) as zf:
            return zf.read(rest[cut + 5:])
    with open(path, "rb") as fh:
        return fh.read()


def _ring(pos_list: ET.Element | None) -> list[tuple[float, float]]:
    if pos_list is None or not (pos_list.text or "").strip():
        return []
    dim = int(pos_list.get("srsDimension", "2"))
    values = [float(v) for v in (pos_list.text or "").split()]
    return [(values[i], values[i + 1]) for i in range(0, len(values) - dim + 1, dim)]


@functools.lru_cache(maxsize=16)
def gml_polygons(path: str) -> tuple[int | None, dict[str, tuple[dict, ...]]]:
    """(EPSG code of ``srsName`` or None, {mask type: GeoJSON-like polygons}) of an ``eop:Mask`` GML.

    Parsed with the standard library: the file is a fixed ESA schema (``eop:MaskFeature`` with
    ``eop:maskType`` and a ``gml:Polygon`` of ``gml:posList`` rings), and OGR opens a mask with no feature
    (a cloud-free tile) as a dataset with no layer.  Cached per path (called for every window)."""
    try:
        root = ET.fromstring(_read_bytes(path))
    except (OSError, KeyError, ET.ParseError) as exc:
        raise CloudMaskError(f"cannot read the cloud mask {path} ({_first_line(exc)}); the product is damaged: "
                             "download it again") from None
    epsg = None
    for el in root.iter():
        if (srs := el.get("srsName")) and (m := re.search(r"(\d+)\s*$", srs)):
            epsg = int(m.group(1))
            break
    shapes: dict[str, list[dict]] = {}
    for feature in root.iter(f"{_EOP}MaskFeature"):
        kind = (feature.findtext(f"{_EOP}maskType") or "").strip().upper()
        for poly in feature.iter(f"{_GML}Polygon"):
            outer = _ring(poly.find(f"{_GML}exterior/{_GML}LinearRing/{_GML}posList"))
            holes = [_ring(p) for p in poly.findall(f"{_GML}interior/{_GML}LinearRing/{_GML}posList")]
            if len(outer) >= 3:
                shapes.setdefault(kind, []).append({"type": "Polygon", "coordinates": [outer, *filter(None, holes)]})
    return epsg, {k: tuple(v) for k, v in shapes.items()}


def _rasterize_gml(path: str, transform: Affine, inside: Window, origin: str) -> np.ndarray:
    """The window ``inside`` of the scene grid with bit i set where polygons of MSK_CLOUDS_TYPES[i] cover
    the pixel centre."""
    if not path:
        raise CloudMaskError(f"the cloud mask dataset of {origin} names no GML ({GML_KEY}); read the product again")
    _, shapes = gml_polygons(path)
    win_t = transform @ Affine.translation(inside.col_off, inside.row_off)
    raw = np.zeros((inside.height, inside.width), dtype=np.uint8)
    for bit, kind in enumerate(MSK_CLOUDS_TYPES):
        if shapes.get(kind):
            burnt = rasterio.features.rasterize(shapes[kind], out_shape=raw.shape, transform=win_t, fill=0,
                                                default_value=1, dtype="uint8")
            raw |= burnt << bit
    return raw


# -- --cloud-mask RASTER --


def _coverage(src: Any, grid: Grid) -> tuple[float, bool]:
    """(fraction of the scene's bounding box, in the mask's CRS, inside the mask's bounds; whether the mask
    covers all of it to within one of its own pixels)."""
    a = grid.affine
    xs = [a.c, a.c + a.a * grid.width]
    ys = [a.f, a.f + a.e * grid.height]
    bounds = (min(xs), min(ys), max(xs), max(ys))
    if grid.crs_wkt and src.crs is not None and CRS.from_wkt(grid.crs_wkt) != src.crs:
        bounds = transform_bounds(CRS.from_wkt(grid.crs_wkt), src.crs, *bounds, densify_pts=21)
    left, bottom, right, top = src.bounds
    tx, ty = abs(src.res[0]), abs(src.res[1])
    covers = bounds[0] >= left - tx and bounds[1] >= bottom - ty and bounds[2] <= right + tx and bounds[3] <= top + ty
    w = max(0.0, min(bounds[2], right) - max(bounds[0], left))
    h = max(0.0, min(bounds[3], top) - max(bounds[1], bottom))
    area = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    return (1.0 if area <= 0 else min(1.0, w * h / area)), covers


def _warped_xml(src: Any, grid: Grid, path: str) -> str:
    """The VRTWarpedDataset XML (GDAL's own serialisation) of ``src`` on ``grid``, nearest neighbour."""
    options = {} if src.nodata is None else {"src_nodata": src.nodata, "nodata": src.nodata}
    tmp = tempfile.mkdtemp(prefix="geoseg-cloudmask-")
    try:
        with warped(src, grid, "nearest", **options) as vrt:
            rasterio.shutil.copy(vrt, os.path.join(tmp, "mask.vrt"), driver="VRT")
        root = ET.parse(os.path.join(tmp, "mask.vrt")).getroot()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for el in root.iter("SourceDataset"):  # absolute, so the XML works from anywhere
        el.text = path
        el.set("relativeToVRT", "0")
    return ET.tostring(root, encoding="unicode")


# long: each refusal is its own one-line message naming the fix
def user_cloud_mask(path: str, crs_wkt: str | None, transform: tuple, width: int, height: int) -> CloudMask:
    """``--cloud-mask RASTER`` for the scene on grid (``crs_wkt``, ``transform``, ``width``, ``height``): a
    single-band integer raster, non-zero = masked.  On the scene's grid it is used as is; on another grid
    or CRS it is read through a nearest-neighbour warped VRT onto the scene's grid.  Raises
    MissingCloudMaskError / CloudMaskError (one line each) for a missing, unreadable, multi-band, float or
    non-covering mask."""
    p = str(path)
    if not p.startswith("/vsi") and not os.path.exists(p):
        raise MissingCloudMaskError(f"cloud mask {p} does not exist; pass an existing raster to --cloud-mask")
    if not p.startswith("/vsi"):
        p = os.path.abspath(p)
    try:
        src = rasterio.open(p)
    except RasterioIOError as exc:
        raise CloudMaskError(f"cloud mask {p} is not a readable raster ({_first_line(exc)}); pass a GeoTIFF "
                             "with 0 = clear and non-zero = masked") from None
    grid = Grid(crs_wkt or "", tuple(float(v) for v in tuple(transform)[:6]), int(width), int(height))
    with src:
        if src.count != 1:
            raise CloudMaskError(f"cloud mask {p} has {src.count} bands; a cloud mask has one (0 = clear, "
                                 "non-zero = masked): extract it with gdal_translate -b N")
        dtype = np.dtype(src.dtypes[0])
        if dtype.kind not in "iub":
            raise CloudMaskError(f"cloud mask {p} is {dtype.name}; a cloud mask is an integer raster (0 = clear, "
                                 "non-zero = masked): convert it with gdal_translate -ot Byte")
        same_size = (src.width, src.height) == (grid.width, grid.height)
        if src.crs is None or not crs_wkt:
            if same_size and src.transform.almost_equals(grid.affine):
                return CloudMask(p, "raster", p, nonzero=True)
            what = "the cloud mask has no CRS" if src.crs is None else "the scene has no CRS"
            raise CloudMaskError(f"cloud mask {p}: {what}, so it must be on the scene's pixel grid and is not; "
                                 "georeference both (gdal_edit -a_srs) or write the mask on the scene's grid")
        win = same_lattice(src, grid)
        if win is not None and same_size and (win.col_off, win.row_off) == (0, 0):
            return CloudMask(p, "raster", p, nonzero=True)
        covered, covers = _coverage(src, grid)
        if not covers:
            raise CloudMaskError(f"cloud mask {p} covers {covered:.0%} of the scene; give a mask that covers the "
                                 "whole scene (outside it nothing would be masked)")
        return CloudMask(_warped_xml(src, grid, p), "raster", p, nonzero=True)
