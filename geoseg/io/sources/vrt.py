"""One stacked GDAL VRT from per-band files: every band on the finest band's grid, coarser bands
resampled bilinearly by GDAL at read time (``<ComplexSource resampling="bilinear">``), so a windowed
read of the VRT reads only the matching windows of the band files: never a full-scene resample.

Each VRT band carries the ``<Scale>``/``<Offset>`` that map its stored DN to the physical quantity, its
canonical name as description and the stored DN's nodata.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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


# long: one VRTRasterBand element, its attributes and its source written out in order
def _band_xml(i: int, bf: BandFile, g: _Grid, target: _Grid) -> str:
    tx, ty = target.transform[2], target.transform[5]
    rx, ry = target.transform[0], target.transform[4]
    x_off = (g.transform[2] - tx) / rx
    y_off = (g.transform[5] - ty) / ry
    x_size = g.width * g.transform[0] / rx
    y_size = g.height * g.transform[4] / ry
    resampled = not (math.isclose(g.transform[0], rx) and math.isclose(g.transform[4], ry))
    tag = "ComplexSource" + (' resampling="bilinear"' if resampled else "")
    nodata = "" if bf.nodata is None else f"<NoDataValue>{_fmt(bf.nodata)}</NoDataValue>"
    src_nodata = "" if bf.nodata is None else f"<NODATA>{_fmt(bf.nodata)}</NODATA>"
    return (
        f'  <VRTRasterBand dataType="{_gdal_type(g.dtype)}" band="{i}">\n'
        f"    <Description>{escape(bf.name)}</Description>\n"
        f"    {nodata}\n"
        f"    <Offset>{_fmt(bf.offset)}</Offset>\n"
        f"    <Scale>{_fmt(bf.scale)}</Scale>\n"
        f"    <{tag}>\n"
        f'      <SourceFilename relativeToVRT="0">{escape(bf.path)}</SourceFilename>\n'
        f"      <SourceBand>{bf.band}</SourceBand>\n"
        f'      <SourceProperties RasterXSize="{g.width}" RasterYSize="{g.height}" '
        f'DataType="{_gdal_type(g.dtype)}" BlockXSize="{g.block[0]}" BlockYSize="{g.block[1]}"/>\n'
        f'      <SrcRect xOff="0" yOff="0" xSize="{g.width}" ySize="{g.height}"/>\n'
        f'      <DstRect xOff="{_fmt(x_off)}" yOff="{_fmt(y_off)}" xSize="{_fmt(x_size)}" '
        f'ySize="{_fmt(y_size)}"/>\n'
        f"      {src_nodata}\n"
        f"    </ComplexSource>\n"
        f"  </VRTRasterBand>\n"
    )


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64", "int8": "Int8"}


def _gdal_type(dtype: str) -> str:
    return _GDAL_TYPES.get(dtype, "Float32")


def stack_vrt(bands: Sequence[BandFile], tags: dict[str, str], origin: str) -> str:
    """The VRT XML stacking ``bands`` (in order) on the grid of the finest one.  Raises
    UnreadableBandError for a file GDAL cannot open and GridMismatchError for bands in different CRSs
    or footprints that do not cover the same ground."""
    if not bands:
        raise UnreadableBandError(f"{origin}: no band to read")
    grids = [_inspect(bf, origin) for bf in bands]
    target = min(grids, key=lambda g: g.res)
    for bf, g in zip(bands, grids, strict=True):
        if not _same_crs(g.crs_wkt, target.crs_wkt):
            raise GridMismatchError(
                f"{origin}: band {bf.name} is in a different CRS from band {bands[grids.index(target)].name}; "
                "reproject the band files onto one CRS (gdalwarp -t_srs) first")
        _check_footprint(bf, g, target, origin)
    metadata = "".join(f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>\n" for k, v in tags.items())
    body = "".join(_band_xml(i, bf, g, target) for i, (bf, g) in enumerate(zip(bands, grids, strict=True), 1))
    gt = target.transform
    geo = ", ".join(_fmt(v) for v in (gt[2], gt[0], gt[1], gt[5], gt[3], gt[4]))
    return (
        f'<VRTDataset rasterXSize="{target.width}" rasterYSize="{target.height}">\n'
        f"  <SRS>{escape(target.crs_wkt)}</SRS>\n"
        f"  <GeoTransform>{geo}</GeoTransform>\n"
        f'  <Metadata>\n{metadata}  </Metadata>\n'
        f"{body}</VRTDataset>\n"
    )


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
