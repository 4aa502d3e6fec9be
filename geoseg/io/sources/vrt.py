"""One stacked GDAL VRT from per-band files: every band on the finest band's grid, coarser bands
resampled bilinearly by GDAL at read time (``<ComplexSource resampling="bilinear">``), so a windowed
read of the VRT reads only the matching windows of the band files: never a full-scene resample.
:func:`mask_vrt` puts a product's cloud mask on the same grid, resampled nearest (class codes, bits).

Each VRT band carries the ``<Scale>``/``<Offset>`` that map its stored DN to the physical quantity, its
canonical name as description and the stored DN's nodata.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape, quoteattr

import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from geoseg.errors import GridMismatchError, UnreadableBandError


@dataclass(frozen=True)
class BandFile:
    """One band of the stack: a GDAL path (``/vsizip/...`` allowed), the band in it, and radiometry."""

    name: str  # canonical band name, the VRT band description
    path: str
    band: int = 1
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = 0.0
    resampling: str = "bilinear"  # onto a finer grid; "nearest" for class codes and bit fields


@dataclass(frozen=True)
class _Grid:
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    dtype: str
    block: tuple[int, int]

    @property
    def res(self) -> float:
        return abs(self.transform[0])


def _inspect(bf: BandFile, origin: str) -> _Grid:
    try:
        with rasterio.open(bf.path) as src:
            if src.crs is None:
                raise UnreadableBandError(f"{origin}: band {bf.name} ({bf.path}) has no CRS; "
                                          "the product is damaged: download it again")
            if src.transform.b != 0 or src.transform.d != 0:
                raise UnreadableBandError(f"{origin}: band {bf.name} is on a rotated grid; stack it with gdalwarp")
            if not 1 <= bf.band <= src.count:
                raise UnreadableBandError(f"{origin}: {bf.path} has {src.count} band(s), so no band {bf.band} "
                                          f"({bf.name}); the product is damaged: download it again")
            bx, by = src.block_shapes[bf.band - 1]
            return _Grid(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height,
                         src.dtypes[bf.band - 1], (bx, by))
    except RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnreadableBandError(f"{origin}: cannot read band {bf.name} ({bf.path}): {first}; the file is "
                                  "truncated or damaged: download the product again") from None


def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    return bool(CRS.from_wkt(a) == CRS.from_wkt(b))


def _fmt(x: float) -> str:
    return repr(float(x))


def _source_xml(bf: BandFile, g: _Grid, target: _Grid, lut: str = "") -> str:
    """The ``<ComplexSource>`` placing band ``bf`` (on grid ``g``) onto ``target``."""
    rx, ry = target.transform[0], target.transform[4]
    x_off = (g.transform[2] - target.transform[2]) / rx
    y_off = (g.transform[5] - target.transform[5]) / ry
    x_size = g.width * g.transform[0] / rx
    y_size = g.height * g.transform[4] / ry
    resampled = not (math.isclose(g.transform[0], rx) and math.isclose(g.transform[4], ry))
    tag = "ComplexSource" + (f' resampling="{bf.resampling}"' if resampled else "")
    src_nodata = "" if bf.nodata is None else f"<NODATA>{_fmt(bf.nodata)}</NODATA>"
    return (
        f"    <{tag}>\n"
        f'      <SourceFilename relativeToVRT="0">{escape(bf.path)}</SourceFilename>\n'
        f"      <SourceBand>{bf.band}</SourceBand>\n"
        f'      <SourceProperties RasterXSize="{g.width}" RasterYSize="{g.height}" '
        f'DataType="{_gdal_type(g.dtype)}" BlockXSize="{g.block[0]}" BlockYSize="{g.block[1]}"/>\n'
        f'      <SrcRect xOff="0" yOff="0" xSize="{g.width}" ySize="{g.height}"/>\n'
        f'      <DstRect xOff="{_fmt(x_off)}" yOff="{_fmt(y_off)}" xSize="{_fmt(x_size)}" '
        f'ySize="{_fmt(y_size)}"/>\n'
        f"      {src_nodata}{f'<LUT>{lut}</LUT>' if lut else ''}\n"
        f"    </ComplexSource>\n"
    )


def _band_xml(i: int, bf: BandFile, g: _Grid, target: _Grid) -> str:
    """One VRTRasterBand: description, nodata, scale/offset and its one source."""
    nodata = "" if bf.nodata is None else f"<NoDataValue>{_fmt(bf.nodata)}</NoDataValue>"
    return (
        f'  <VRTRasterBand dataType="{_gdal_type(g.dtype)}" band="{i}">\n'
        f"    <Description>{escape(bf.name)}</Description>\n"
        f"    {nodata}\n"
        f"    <Offset>{_fmt(bf.offset)}</Offset>\n"
        f"    <Scale>{_fmt(bf.scale)}</Scale>\n"
        f"{_source_xml(bf, g, target)}"
        f"  </VRTRasterBand>\n"
    )


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64", "int8": "Int8"}


def _gdal_type(dtype: str) -> str:
    return _GDAL_TYPES.get(dtype, "Float32")


def _dataset_xml(target: _Grid, tags: dict[str, str], body: str) -> str:
    metadata = "".join(f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>\n" for k, v in tags.items())
    gt = target.transform
    geo = ", ".join(_fmt(v) for v in (gt[2], gt[0], gt[1], gt[5], gt[3], gt[4]))
    return (
        f'<VRTDataset rasterXSize="{target.width}" rasterYSize="{target.height}">\n'
        f"  <SRS>{escape(target.crs_wkt)}</SRS>\n"
        f"  <GeoTransform>{geo}</GeoTransform>\n"
        f'  <Metadata>\n{metadata}  </Metadata>\n'
        f"{body}</VRTDataset>\n"
    )


def _check_grids(bands: Sequence[BandFile], grids: Sequence[_Grid], target: _Grid, target_label: str,
                 origin: str) -> None:
    for bf, g in zip(bands, grids, strict=True):
        if not _same_crs(g.crs_wkt, target.crs_wkt):
            raise GridMismatchError(
                f"{origin}: band {bf.name} is in a different CRS from {target_label}; "
                "reproject the band files onto one CRS (gdalwarp -t_srs) first")
        _check_footprint(bf, g, target, origin)


def stack_vrt(bands: Sequence[BandFile], tags: dict[str, str], origin: str) -> str:
    """The VRT XML stacking ``bands`` (in order) on the grid of the finest one.  Raises
    UnreadableBandError for a file GDAL cannot open and GridMismatchError for bands in different CRSs
    or footprints that do not cover the same ground."""
    if not bands:
        raise UnreadableBandError(f"{origin}: no band to read")
    grids = [_inspect(bf, origin) for bf in bands]
    target = min(grids, key=lambda g: g.res)
    _check_grids(bands, grids, target, f"band {bands[grids.index(target)].name}", origin)
    body = "".join(_band_xml(i, bf, g, target) for i, (bf, g) in enumerate(zip(bands, grids, strict=True), 1))
    return _dataset_xml(target, tags, body)


def _scene_grid(scene: str) -> _Grid:
    with rasterio.open(scene) as src:
        return _Grid(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height, "uint8", (256, 256))


def mask_vrt(sources: Sequence[BandFile], scene: str, origin: str, bits: Sequence[int] = (),
             tags: dict[str, str] | None = None) -> str:
    """A one-band VRT on the grid of the stacked VRT ``scene`` (what :func:`stack_vrt` returned), for a
    cloud mask: the single source resampled nearest (its stored values kept: no scale, offset or nodata);
    with ``bits``, a derived band whose bit ``bits[i]`` is set where ``sources[i]`` is non-zero (e.g. the
    opaque-cloud and cirrus bands of MSK_CLASSI); with no source, a band of zeros (the grid only, for a
    mask that is rasterised at read time from what ``tags`` names).  Raises like :func:`stack_vrt`."""
    target = _scene_grid(scene)
    srcs = [replace(bf, scale=1.0, offset=0.0, nodata=None, resampling="nearest") for bf in sources]
    grids = [_inspect(bf, origin) for bf in srcs]
    _check_grids(srcs, grids, target, "the scene's bands", origin)
    if not srcs:
        body = '  <VRTRasterBand dataType="Byte" band="1"/>\n'
    elif not bits:
        body = _band_xml(1, srcs[0], grids[0], target)
    else:
        if len(bits) != len(srcs) or max(bits) > 7:
            raise ValueError("mask_vrt: one bit (0..7) per source")
        parts = "".join(_source_xml(bf, g, target, lut=f"0:0,1:{1 << bit},255:{1 << bit}")
                        for bf, g, bit in zip(srcs, grids, bits, strict=True))
        body = ('  <VRTRasterBand dataType="Byte" band="1" subClass="VRTDerivedRasterBand">\n'
                f"    <Description>{escape(srcs[0].name)}</Description>\n"
                "    <PixelFunctionType>sum</PixelFunctionType>\n"
                f"{parts}  </VRTRasterBand>\n")
    return _dataset_xml(target, tags or {}, body)


def _check_footprint(bf: BandFile, g: _Grid, target: _Grid, origin: str) -> None:
    """A coarser band must cover the finest band's extent to within one of its own pixels."""
    ext = (g.transform[2], g.transform[5], g.transform[2] + g.width * g.transform[0],
           g.transform[5] + g.height * g.transform[4])
    t = target.transform
    text = (t[2], t[5], t[2] + target.width * t[0], t[5] + target.height * t[4])
    tol = g.res * 1.01
    if any(abs(a - b) > tol for a, b in zip(ext, text, strict=True)):
        raise GridMismatchError(f"{origin}: band {bf.name} covers a different area from the finest band; "
                                "the band files are not from one product")


_SOURCE_PROPS = re.compile(r'<SourceProperties RasterXSize="(\d+)" RasterYSize="\d+" DataType="(\w+)" '
                           r'BlockXSize="\d+" BlockYSize="(\d+)"')
_GDAL_BYTES = {"Byte": 1, "Int8": 1, "UInt16": 2, "Int16": 2, "UInt32": 4, "Int32": 4, "Float32": 4, "Float64": 8}


def row_cache_bytes(xml: str) -> int:
    """Bytes of one row of source blocks across every band file of a stacked VRT: what GDAL's block cache must hold
    for a pass of tiles along the scene to decode each (JPEG 2000: 1024-row) block once.  0 when unknown."""
    return sum(int(width) * int(rows) * _GDAL_BYTES.get(dtype, 4) for width, dtype, rows in _SOURCE_PROPS.findall(xml))
