"""Test fixtures for the product readers (geoseg.io.sources), written in code from the shipped Hong Kong
sample: a reference stacked GeoTIFF on UTM 49N at 10 m, and the same pixels as a Sentinel-2 SAFE (JP2
bands at 10/20/60 m, product and granule metadata), a STAC Item of per-band COGs and a Landsat C2 L2
folder.  Small (<= 256 px): for tests; the benchmarks build large ones with the same functions.

Each product carries its own cloud mask with KNOWN regions (:func:`cloud_boxes`, rectangles in 10 m
pixels of the reference): the L2A SCL (20 m and 60 m), the L1C MSK_CLASSI_B00.jp2 (60 m, baseline >=
04.00) or MSK_CLOUDS_B00.gml (before 04.00), the STAC Item's SCL asset (L2A) and the Landsat QA_PIXEL
(30 m).  A coarse mask pixel is set when its centre lies in the box (:func:`box_mask`), as a product's
own coarse mask would be.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import rasterio
import rasterio.transform
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject, transform_bounds

SAMPLE = Path(__file__).resolve().parent.parent / "tiles" / "hongkong_20160927" / "image.tif"
REFERENCE_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12")
UTM49N = CRS.from_epsg(32649)
TILE = "T49QHE"
SENSED = "20160927T025552"
SENSING_TIME = "2016-09-27T02:55:52.026Z"
#: Earth Search (element84) asset keys by canonical band
EARTH_SEARCH_KEYS = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge1",
                     "B6": "rededge2", "B7": "rededge3", "B8": "nir", "B8A": "nir08", "B9": "nir09",
                     "B11": "swir16", "B12": "swir22"}
_RES = {"B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20,
        "B9": 60, "B10": 60, "B11": 20, "B12": 20}
_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
_JP2 = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"}


def write_reference(path: str | os.PathLike, size: int = 240, sample: str | os.PathLike = SAMPLE) -> Path:
    """Reproject a ``size`` x ``size`` crop of the sample ONCE onto UTM 49N at 10 m (grid aligned to 60 m,
    ``size`` a multiple of 6) and write it as the reference stacked GeoTIFF (9 bands, nodata 0)."""
    if size % 6:
        raise ValueError("size must be a multiple of 6 (the 60 m bands)")
    path = Path(path)
    with rasterio.open(sample) as src:
        left, bottom, right, top = transform_bounds(src.crs, UTM49N, *src.bounds)
        cx, cy = (left + right) / 2, (bottom + top) / 2
        x0 = np.floor((cx - size * 5) / 60) * 60
        y0 = np.ceil((cy + size * 5) / 60) * 60
        transform = Affine(10.0, 0.0, float(x0), 0.0, -10.0, float(y0))
        data = np.zeros((src.count, size, size), dtype="uint16")
        reproject(rasterio.band(src, list(range(1, src.count + 1))), data, dst_transform=transform,
                  dst_crs=UTM49N, resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": data.shape[0], "dtype": "uint16",
               "crs": UTM49N, "transform": transform, "nodata": 0, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = REFERENCE_BANDS
        dst.update_tags(SENSING_TIME=SENSING_TIME)
    return path


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // f, f, w // f, f).astype("float64").mean(axis=(1, 3))


def product_bands(reference: str | os.PathLike) -> tuple[dict[str, np.ndarray], Affine, CRS]:
    """Every Sentinel-2 band at its native resolution from the reference: 10 m bands copied, 20 m bands
    by 2x2 mean (B8A from B8), 60 m bands synthetic (B1 from B2, B9 from B8, B10 a low constant)."""
    with rasterio.open(reference) as src:
        ref = {name: src.read(i + 1) for i, name in enumerate(REFERENCE_BANDS)}
        transform, crs = src.transform, src.crs
    out: dict[str, np.ndarray] = {}
    for name in _ORDER:
        f = _RES[name] // 10
        if name in ref and f == 1:
            arr = ref[name].astype("float64")
        elif name in ref or name == "B8A":
            arr = _block_mean(ref["B8" if name == "B8A" else name], f)
        elif name == "B1":
            arr = _block_mean(ref["B2"], f) * 1.1
        elif name == "B9":
            arr = _block_mean(ref["B8"], f) * 0.3
        else:
            arr = np.full((ref["B2"].shape[0] // f, ref["B2"].shape[1] // f), 15.0)
        out[name] = np.clip(np.rint(arr), 1, 65535).astype("uint16")
    return out, transform, crs


def _write_band(path: Path, arr: np.ndarray, transform: Affine, crs: CRS, res: int, **opts: object) -> None:
    """``arr`` (h, w) or (bands, h, w) at ``res`` m from the reference's corner; uint16, nodata 0 unless
    ``opts`` say otherwise."""
    t = Affine(float(res), 0.0, transform.c, 0.0, -float(res), transform.f)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = arr if arr.ndim == 3 else arr[None]
    profile: dict = {"width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
                     "dtype": "uint16", "crs": crs, "transform": t, "nodata": 0}
    profile.update(opts)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


# -- cloud masks with known regions --


def cloud_boxes(size: int) -> dict[str, tuple[int, int, int, int]]:
    """The known regions of every fixture's cloud mask, ``(row0, col0, row1, col1)`` in 10 m pixels of a
    ``size`` x ``size`` reference (end exclusive; several edges fall inside 20 m / 60 m pixels on purpose).
    ``cloud``: SCL 9, MSK_CLASSI opaque, GML OPAQUE, QA_PIXEL cloud; ``haze``: SCL 8, opaque, OPAQUE,
    QA_PIXEL dilated cloud; ``shadow``: SCL 3, QA_PIXEL cloud shadow (no L1C mask has shadows);
    ``cirrus``: SCL 10, MSK_CLASSI cirrus, GML CIRRUS, QA_PIXEL cirrus; ``snow``: SCL 11, MSK_CLASSI
    snow/ice, QA_PIXEL snow (never masked); ``defective``: SCL 1 (saturated or defective)."""
    fractions = {"cloud": (0.20, 0.25, 0.45, 0.60), "haze": (0.45, 0.25, 0.50, 0.60),
                 "shadow": (0.55, 0.10, 0.68, 0.40), "cirrus": (0.70, 0.55, 0.88, 0.92),
                 "snow": (0.04, 0.70, 0.14, 0.95), "defective": (0.90, 0.05, 0.95, 0.20)}
    return {k: (round(a * size), round(b * size), round(c * size), round(d * size))
            for k, (a, b, c, d) in fractions.items()}


def box_mask(box: tuple[int, int, int, int], factor: int, shape: tuple[int, int]) -> np.ndarray:
    """``shape`` (coarse rows, cols) bool: the coarse pixels (``factor`` x 10 m) whose centre lies in ``box``."""
    r = (np.arange(shape[0]) + 0.5) * factor
    c = (np.arange(shape[1]) + 0.5) * factor
    return ((r >= box[0]) & (r < box[2]))[:, None] & ((c >= box[1]) & (c < box[3]))[None, :]


def _coarse_index(box: tuple[int, int, int, int], factor: int) -> tuple[int, int, int, int]:
    """The coarse pixel index range [i0, i1) x [j0, j1) that :func:`box_mask` sets."""
    def first(v: int) -> int:
        return int(np.ceil(v / factor - 0.5))
    return first(box[0]), first(box[1]), first(box[2]), first(box[3])


def _scl(size: int, res: int) -> np.ndarray:
    """A Scene Classification at ``res`` m: vegetation / not vegetated / water background, the boxes."""
    f = res // 10
    n = size // f
    scl = np.full((n, n), 4, dtype="uint8")
    scl[:, n // 2:] = 5
    scl[int(n * 0.8):, : n // 3] = 6
    scl[int(n * 0.3):int(n * 0.35), int(n * 0.8):int(n * 0.9)] = 7  # unclassified: observed
    scl[int(n * 0.75):int(n * 0.8), int(n * 0.3):int(n * 0.45)] = 2  # dark area pixels: observed
    codes = {"cloud": 9, "haze": 8, "shadow": 3, "cirrus": 10, "snow": 11, "defective": 1}
    for name, box in cloud_boxes(size).items():
        scl[box_mask(box, f, (n, n))] = codes[name]
    return scl


def _msk_classi(size: int) -> np.ndarray:
    """MSK_CLASSI_B00 at 60 m: band 1 opaque clouds, band 2 cirrus, band 3 snow and ice (0/1)."""
    n = size // 6
    boxes = cloud_boxes(size)
    out = np.zeros((3, n, n), dtype="uint8")
    for band, names in enumerate((("cloud", "haze"), ("cirrus",), ("snow",))):
        for name in names:
            out[band][box_mask(boxes[name], 6, (n, n))] = 1
    return out


def _msk_clouds_gml(size: int, transform: Affine, epsg: int, empty: bool = False) -> str:
    """MSK_CLOUDS_B00.gml (eop:Mask of OPAQUE / CIRRUS MaskFeatures, polygons on the 60 m lattice), as in
    L1C products before baseline 04.00; ``empty``: a cloud-free tile's mask (no feature)."""
    gml_id = f"S2A_OPER_MSK_CLOUDS_SGS__20160927T081713_A006607_{TILE}_B00_MSIL1C"
    head = ('<?xml version="1.0" encoding="UTF-8"?>\n<eop:Mask xmlns:eop="http://www.opengis.net/eop/2.0" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:gml="http://www.opengis.net/gml/3.2" '
            f'gml:id="{gml_id}">\n  <gml:name>MSK_CLOUDS pixels mask from data-strip {gml_id}</gml:name>\n')
    if empty:
        return head + ("  <gml:boundedBy>\n    <gml:Null>Empty</gml:Null>\n  </gml:boundedBy>\n"
                       "  <eop:maskMembers/>\n</eop:Mask>\n")
    boxes = cloud_boxes(size)
    features, lo, hi = [], [np.inf, np.inf], [-np.inf, -np.inf]
    for kind, names in (("OPAQUE", ("cloud", "haze")), ("CIRRUS", ("cirrus",))):
        for k, name in enumerate(names):
            i0, j0, i1, j1 = _coarse_index(boxes[name], 6)
            x0, x1 = transform.c + j0 * 60, transform.c + j1 * 60
            y0, y1 = transform.f - i0 * 60, transform.f - i1 * 60
            lo, hi = [min(lo[0], x0), min(lo[1], y1)], [max(hi[0], x1), max(hi[1], y0)]
            ring = " ".join(f"{x:.0f} {y:.0f}" for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)))
            features.append(
                f'    <eop:MaskFeature gml:id="{kind}.{k}">\n'
                f'      <eop:maskType codeSpace="urn:gs2:S2PDGS:maskType">{kind}</eop:maskType>\n'
                f'      <eop:extentOf>\n        <gml:Polygon gml:id="{kind}.{k}_Polygon">\n'
                "          <gml:exterior>\n            <gml:LinearRing>\n"
                f'              <gml:posList srsDimension="2">{ring}</gml:posList>\n'
                "            </gml:LinearRing>\n          </gml:exterior>\n        </gml:Polygon>\n"
                "      </eop:extentOf>\n    </eop:MaskFeature>\n")
    return head + (f'  <gml:boundedBy>\n    <gml:Envelope srsName="urn:ogc:def:crs:EPSG:8.7:{epsg}">\n'
                   f"      <gml:lowerCorner>{lo[0]:.0f} {lo[1]:.0f}</gml:lowerCorner>\n"
                   f"      <gml:upperCorner>{hi[0]:.0f} {hi[1]:.0f}</gml:upperCorner>\n"
                   "    </gml:Envelope>\n  </gml:boundedBy>\n"
                   f"  <eop:maskMembers>\n{''.join(features)}  </eop:maskMembers>\n</eop:Mask>\n")


def _write_safe_masks(safe: Path, granule: str, level: str, baseline: str, transform: Affine, crs: CRS,
                      size: int, empty: bool) -> None:
    """The product's cloud masks: L1C (and L2A) QI_DATA MSK_CLASSI_B00.jp2 (>= 04.00) or
    MSK_CLOUDS_B00.gml (before), and for L2A the SCL at 20 m and 60 m."""
    qi = safe / granule / "QI_DATA"
    qi.mkdir(parents=True, exist_ok=True)
    if float(baseline) >= 4.0:
        classi = np.zeros((3, size // 6, size // 6), "uint8") if empty else _msk_classi(size)
        _write_band(qi / "MSK_CLASSI_B00.jp2", classi, transform, crs, 60, dtype="uint8", nodata=None, **_JP2)
    else:
        gml = _msk_clouds_gml(size, transform, int(crs.to_epsg() or 0), empty=empty)
        (qi / "MSK_CLOUDS_B00.gml").write_text(gml, encoding="utf-8")
    if level == "L2A":
        for res in (20, 60):
            scl = np.full((size * 10 // res,) * 2, 4, "uint8") if empty else _scl(size, res)
            rel = f"{granule}/IMG_DATA/R{res}m/{TILE}_{SENSED}_SCL_{res}m.jp2"
            _write_band(safe / rel, scl, transform, crs, res, dtype="uint8", nodata=None, **_JP2)


def _mtd_xml(level: str, baseline: str, offset: int, files: list[str], cloud: float = 3.2) -> str:
    l2a = level == "L2A"
    ns = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd"
    root = f"Level-{level[1:]}_User_Product"
    quant = ("<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit=\"none\">10000</BOA_QUANTIFICATION_VALUE>"
             "<AOT_QUANTIFICATION_VALUE unit=\"none\">1000.0</AOT_QUANTIFICATION_VALUE>"
             "<WVP_QUANTIFICATION_VALUE unit=\"cm\">1000.0</WVP_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>"
             if l2a else "<QUANTIFICATION_VALUE unit=\"none\">10000</QUANTIFICATION_VALUE>")
    tag, lst = ("BOA_ADD_OFFSET", "BOA_ADD_OFFSET_VALUES_LIST") if l2a else ("RADIO_ADD_OFFSET",
                                                                              "Radiometric_Offset_List")
    offsets = (f"<{lst}>" + "".join(f'<{tag} band_id="{i}">{offset}</{tag}>' for i in range(13)) + f"</{lst}>"
               if float(baseline) >= 4.0 else "")
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"><RESOLUTION>{_RES[b]}'
                       f"</RESOLUTION></Spectral_Information>" for i, b in enumerate(_ORDER))
    images = "".join(f"<IMAGE_FILE>{f[:-4]}</IMAGE_FILE>" for f in files)
    uri = f"S2A_MSI{level}_{SENSED}_N{baseline.replace('.', '')}_R032_{TILE}_20160927T030403.SAFE"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{root} xmlns:n1="{ns}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{SENSING_TIME}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{SENSING_TIME}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{uri}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <GENERATION_TIME>2016-09-27T08:17:13.000Z</GENERATION_TIME>
      <Datatake datatakeIdentifier="GS2A_{SENSED}_006607_N{baseline.replace('.', '')}">
        <SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{SENSING_TIME}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>32</SENSING_ORBIT_NUMBER>
      </Datatake>
      <Product_Organisation><Granule_List><Granule granuleIdentifier="{level}_{TILE}_A006607_20160927T030403"
        imageFormat="JPEG2000">{images}</Granule></Granule_List></Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>65535
      </SPECIAL_VALUE_INDEX></Special_Values>
      {quant}
      {offsets}
      <Spectral_Information_List>{spectral}</Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>{cloud}</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:{root}>
"""


def _tile_xml(level: str, transform: Affine, size: int) -> str:
    sizes = "".join(f'<Size resolution="{r}"><NROWS>{size * 10 // r}</NROWS><NCOLS>{size * 10 // r}</NCOLS></Size>'
                    for r in (10, 20, 60))
    geo = "".join(f'<Geoposition resolution="{r}"><ULX>{transform.c:.0f}</ULX><ULY>{transform.f:.0f}</ULY>'
                  f"<XDIM>{r}</XDIM><YDIM>-{r}</YDIM></Geoposition>" for r in (10, 20, 60))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{level[1:]}_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-{level[1:]}_Tile_Metadata.xsd">
  <n1:General_Info>
    <TILE_ID>S2A_OPER_MSI_{level}_TL_SGS__20160927T081713_A006607_{TILE}_N02.04</TILE_ID>
    <SENSING_TIME>{SENSING_TIME}</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info><Tile_Geocoding>
    <HORIZONTAL_CS_NAME>WGS84 / UTM zone 49N</HORIZONTAL_CS_NAME><HORIZONTAL_CS_CODE>EPSG:32649</HORIZONTAL_CS_CODE>
    {sizes}{geo}
  </Tile_Geocoding></n1:Geometric_Info>
</n1:Level-{level[1:]}_Tile_ID>
"""


# long: the SAFE tree written in its order (band files, granule metadata, product metadata, zip)
def write_safe(out_dir: str | os.PathLike, reference: str | os.PathLike, *, baseline: str = "02.04",
               level: str = "L1C", as_zip: bool = False, drop: tuple[str, ...] = (),
               masks: str = "boxes") -> Path:
    """A SAFE product of the reference's pixels in ``out_dir`` (its ``.SAFE`` folder, or the ``.zip`` with
    ``as_zip``).  Baseline >= 04.00 stores DN = value + 1000 with RADIO_ADD_OFFSET (L2A: BOA_ADD_OFFSET)
    -1000; ``drop`` leaves band files out (for the missing-band error).  ``masks``: ``boxes`` (the cloud
    masks with :func:`cloud_boxes`), ``empty`` (cloud-free masks) or ``none`` (no mask file at all)."""
    bands, transform, crs = product_bands(reference)
    offset = -1000 if float(baseline) >= 4.0 else 0
    name = f"S2A_MSI{level}_{SENSED}_N{baseline.replace('.', '')}_R032_{TILE}_20160927T030403.SAFE"
    safe = Path(out_dir) / name
    granule = f"GRANULE/{level}_{TILE}_A006607_20160927T030403"
    files = []
    for band in _ORDER:
        if band in drop or (level == "L2A" and band == "B10"):
            continue
        arr = bands[band]
        if offset:
            arr = np.where(arr > 0, arr.astype("int64") - offset, 0).astype("uint16")
        fname = f"B{band[1:]:0>2}" if band != "B8A" else "B8A"
        res = _RES[band]
        rel = (f"{granule}/IMG_DATA/{TILE}_{SENSED}_{fname}.jp2" if level == "L1C" else
               f"{granule}/IMG_DATA/R{res}m/{TILE}_{SENSED}_{fname}_{res}m.jp2")
        _write_band(safe / rel, arr, transform, crs, res, **_JP2)
        files.append(rel)
    size = bands["B2"].shape[0]
    (safe / granule / "MTD_TL.xml").write_text(_tile_xml(level, transform, size), encoding="utf-8")
    for sub in ("AUX_DATA", "QI_DATA"):
        (safe / granule / sub).mkdir(exist_ok=True)
    if masks != "none":
        _write_safe_masks(safe, granule, level, baseline, transform, crs, size, empty=masks == "empty")
    (safe / f"MTD_MSI{level}.xml").write_text(_mtd_xml(level, baseline, offset, files), encoding="utf-8")
    for aux in (safe / "rep_info", safe / "DATASTRIP", safe / "HTML"):
        aux.mkdir(exist_ok=True)
    if not as_zip:
        return safe
    zpath = safe.with_suffix(".zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, f.relative_to(safe.parent).as_posix())
    shutil.rmtree(safe)
    return zpath


# long: one asset dict per band in the chosen catalogue's style, then the Item
def write_stac_item(out_dir: str | os.PathLike, reference: str | os.PathLike, *, style: str = "earth-search",
                    add_offset: bool = False, absolute: bool = False,
                    bands_wanted: tuple[str, ...] = REFERENCE_BANDS, level: str = "L1C") -> Path:
    """A STAC Item JSON with one COG per band (the 20 m bands at 20 m) in ``out_dir``.  ``style``:
    ``earth-search`` (keys ``blue``..., ``eo:bands`` and ``raster:bands``), ``planetary-computer`` (keys
    ``B02``...) or ``stac-1.1`` (keys ``B02``..., ``bands`` with ``eo:common_name``, scale/offset/nodata in
    the band).  ``add_offset``: DN stored +1000 with offset -0.1 (baseline 04.00).  ``level="L2A"``: an
    L2A Item with its Scene Classification asset (Earth Search key ``scl``, else ``SCL``; 20 m COG with
    the :func:`cloud_boxes`)."""
    bands, transform, crs = product_bands(reference)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from geoseg.io.sources.bands import BY_NAME

    assets: dict[str, dict] = {}
    for band in bands_wanted:
        arr = bands[band]
        if add_offset:
            arr = np.where(arr > 0, arr.astype("int64") + 1000, 0).astype("uint16")
        s2name = f"B{band[1:]:0>2}" if band != "B8A" else "B8A"
        fname = f"{s2name}.tif"
        _write_band(out / fname, arr, transform, crs, _RES[band], driver="COG", compress="deflate",
                    blocksize=256)
        href = str((out / fname).resolve()) if absolute else f"./{fname}"
        common = BY_NAME[band].common_name
        radiometry = {"nodata": 0, "data_type": "uint16", "spatial_resolution": _RES[band],
                      "scale": 0.0001, "offset": -0.1 if add_offset else 0.0}
        asset: dict = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                       "roles": ["data", "reflectance"], "gsd": _RES[band]}
        if style == "stac-1.1":
            asset["bands"] = [{"name": s2name, "eo:common_name": common, **radiometry}]
            key = s2name
        else:
            asset["eo:bands"] = [{"name": s2name, "common_name": common,
                                  "center_wavelength": BY_NAME[band].wavelength}]
            asset["raster:bands"] = [radiometry]
            key = EARTH_SEARCH_KEYS[band] if style == "earth-search" else s2name
        assets[key] = asset
    if level == "L2A":
        _write_band(out / "SCL.tif", _scl(bands["B2"].shape[0], 20), transform, crs, 20, dtype="uint8",
                    driver="COG", compress="deflate", blocksize=256)
        scl = {"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}
        assets["scl" if style == "earth-search" else "SCL"] = {
            "href": str((out / "SCL.tif").resolve()) if absolute else "./SCL.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": "Scene classification map (SCL)", "roles": ["data"], "gsd": 20,
            **({"bands": [{"name": "SCL", **scl}]} if style == "stac-1.1" else {"raster:bands": [scl]})}
    assets["thumbnail"] = {"href": "./thumbnail.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
    bounds = rasterio.transform.array_bounds(bands["B2"].shape[0], bands["B2"].shape[1], transform)
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds)  # (west, south, east, north)
    baseline = "04.00" if add_offset else "02.04"
    item = {
        "type": "Feature", "stac_version": "1.1.0" if style == "stac-1.1" else "1.0.0",
        "id": f"S2A_{TILE[1:]}_20160927_0_{level}", "collection": f"sentinel-2-{level.lower()}",
        "bbox": [west, south, east, north],
        "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                         [west, north], [west, south]]]},
        "properties": {"datetime": SENSING_TIME, "platform": "sentinel-2a", "constellation": "sentinel-2",
                       "eo:cloud_cover": 3.2, "proj:epsg": 32649, "s2:mgrs_tile": TILE[1:],
                       "s2:processing_baseline": baseline},
        "links": [], "assets": assets,
    }
    path = out / "item.json"
    path.write_text(json.dumps(item, indent=1), encoding="utf-8")
    return path


def write_stacked(path: str | os.PathLike, reference: str | os.PathLike) -> Path:
    """The product's bands stacked the way a user stacks them by hand (a full-scene bilinear warp of
    the 20 m bands onto the 10 m grid, gdalwarp-style): the GeoTIFF a SAFE/STAC read must reproduce."""
    bands, transform, crs = product_bands(reference)
    h, w = bands["B2"].shape
    data = np.zeros((len(REFERENCE_BANDS), h, w), dtype="uint16")
    for i, band in enumerate(REFERENCE_BANDS):
        res = _RES[band]
        src_t = Affine(float(res), 0.0, transform.c, 0.0, -float(res), transform.f)
        reproject(bands[band], data[i], src_transform=src_t, src_crs=crs, dst_transform=transform, dst_crs=crs,
                  resampling=Resampling.bilinear if res > 10 else Resampling.nearest, src_nodata=0, dst_nodata=0)
    path = Path(path)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=len(REFERENCE_BANDS), dtype="uint16",
                       crs=crs, transform=transform, nodata=0, tiled=True, compress="deflate") as dst:
        dst.write(data)
        dst.descriptions = REFERENCE_BANDS
    return path


# -- Landsat 8/9 Collection 2 Level-2 --

LANDSAT_ID = "LC08_L2SP_122044_20160927_20200906_02_T1"
LANDSAT_TIME = "02:55:52.0260000Z"
#: SR band number -> the reference band it is made from (SR_B1 coastal from blue, SR_B5 nir from B8)
LANDSAT_FROM = {1: "B2", 2: "B2", 3: "B3", 4: "B4", 5: "B8", 6: "B11", 7: "B12"}


def _qa(*bits: int, cloud: int = 1, shadow: int = 1, snow: int = 1, cirrus: int = 1) -> int:
    """A QA_PIXEL value: single ``bits`` plus the 2-bit confidences (1 low .. 3 high) in bits 8-15."""
    return sum(1 << b for b in bits) | cloud << 8 | shadow << 10 | snow << 12 | cirrus << 14


#: QA_PIXEL values of USGS C2 (the familiar 21824 clear, 22280 cloud, 23888 shadow, 54596 cirrus...)
QA_PIXEL_VALUES = {"fill": 1, "clear": _qa(6), "water": _qa(6, 7), "cloud": _qa(3, cloud=3),
                   "haze": _qa(1), "shadow": _qa(4, 6, shadow=3), "snow": _qa(5, 6, snow=3),
                   "cirrus": _qa(2, 6, cirrus=3)}


def _mtl_txt(pid: str, spacecraft: str, n: int, cloud: float) -> str:
    files = "".join(f'    FILE_NAME_BAND_{b} = "{pid}_SR_B{b}.TIF"\n' for b in range(1, 8))
    sr = "".join(f"    REFLECTANCE_MAXIMUM_BAND_{b} = 1.602213\n    REFLECTANCE_MINIMUM_BAND_{b} = -0.199972\n"
                 f"    QUANTIZE_CAL_MAX_BAND_{b} = 65535\n    QUANTIZE_CAL_MIN_BAND_{b} = 1\n"
                 f"    REFLECTANCE_MULT_BAND_{b} = 2.75e-05\n    REFLECTANCE_ADD_BAND_{b} = -0.2\n"
                 for b in range(1, 8))
    toa = "".join(f"    REFLECTANCE_MULT_BAND_{b} = 2.0000E-05\n    REFLECTANCE_ADD_BAND_{b} = -0.100000\n"
                  for b in range(1, 10))
    return (
        "GROUP = LANDSAT_METADATA_FILE\n  GROUP = PRODUCT_CONTENTS\n"
        '    ORIGIN = "Image courtesy of the U.S. Geological Survey"\n'
        '    DIGITAL_OBJECT_IDENTIFIER = "https://doi.org/10.5066/P9OGBGM6"\n'
        f'    LANDSAT_PRODUCT_ID = "{pid}"\n    PROCESSING_LEVEL = "L2SP"\n    COLLECTION_NUMBER = 02\n'
        f'    COLLECTION_CATEGORY = "T1"\n    OUTPUT_FORMAT = "GEOTIFF"\n{files}'
        f'    FILE_NAME_QUALITY_L1_PIXEL = "{pid}_QA_PIXEL.TIF"\n    FILE_NAME_METADATA_ODL = "{pid}_MTL.txt"\n'
        "  END_GROUP = PRODUCT_CONTENTS\n  GROUP = IMAGE_ATTRIBUTES\n"
        f'    SPACECRAFT_ID = "{spacecraft}"\n    SENSOR_ID = "OLI_TIRS"\n    WRS_TYPE = 2\n'
        f"    WRS_PATH = 122\n    WRS_ROW = 44\n    DATE_ACQUIRED = 2016-09-27\n"
        f'    SCENE_CENTER_TIME = "{LANDSAT_TIME}"\n    CLOUD_COVER = {cloud:.2f}\n'
        f"    CLOUD_COVER_LAND = {cloud:.2f}\n  END_GROUP = IMAGE_ATTRIBUTES\n"
        '  GROUP = PROJECTION_ATTRIBUTES\n    MAP_PROJECTION = "UTM"\n    DATUM = "WGS84"\n'
        f'    ELLIPSOID = "WGS84"\n    UTM_ZONE = 49\n    GRID_CELL_SIZE_REFLECTIVE = 30.00\n'
        f'    REFLECTIVE_LINES = {n}\n    REFLECTIVE_SAMPLES = {n}\n    ORIENTATION = "NORTH_UP"\n'
        "  END_GROUP = PROJECTION_ATTRIBUTES\n"
        f"  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\n{sr}  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\n"
        f"  GROUP = LEVEL1_RADIOMETRIC_RESCALING\n{toa}  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING\n"
        "END_GROUP = LANDSAT_METADATA_FILE\nEND\n"
    )


def landsat_fill_columns(size: int) -> int:
    """How many 30 m columns at the right edge of the :func:`write_landsat` scene are fill."""
    return max(1, size // 3 // 20)


def write_landsat(out_dir: str | os.PathLike, reference: str | os.PathLike, *, spacecraft: str = "LANDSAT_8",
                  qa: bool = True) -> Path:
    """A Landsat 8/9 Collection 2 Level-2 folder (``<id>_SR_B1..7.TIF``, ``<id>_QA_PIXEL.TIF``, ``<id>_MTL.txt``)
    of the reference's pixels at 30 m (3x3 means; SR DN = (reflectance + 0.2) / 2.75e-05, reflectance =
    reference DN / 10000).  QA_PIXEL carries :func:`cloud_boxes` (cloud, dilated cloud, shadow, cirrus,
    snow), water bottom-left and :func:`landsat_fill_columns` fill columns on the right (SR 0 there).
    ``qa=False`` leaves QA_PIXEL out."""
    with rasterio.open(reference) as src:
        ref = {name: src.read(i + 1) for i, name in enumerate(REFERENCE_BANDS)}
        transform, crs = src.transform, src.crs
    size = ref["B2"].shape[0]
    n = size // 3
    fill = landsat_fill_columns(size)
    pid = LANDSAT_ID.replace("LC08", "LC09") if "9" in spacecraft else LANDSAT_ID
    folder = Path(out_dir) / pid
    geotiff = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    for b, name in LANDSAT_FROM.items():
        refl = _block_mean(ref[name], 3) / 10000.0
        dn = np.clip(np.rint((refl + 0.2) / 2.75e-05), 1, 65535).astype("uint16")
        dn[:, n - fill:] = 0
        _write_band(folder / f"{pid}_SR_B{b}.TIF", dn, transform, crs, 30, **geotiff)
    if qa:
        values = np.full((n, n), QA_PIXEL_VALUES["clear"], dtype="uint16")
        values[int(n * 0.8):, : n // 3] = QA_PIXEL_VALUES["water"]
        for name, box in cloud_boxes(size).items():
            if name in QA_PIXEL_VALUES:
                values[box_mask(box, 3, (n, n))] = QA_PIXEL_VALUES[name]
        values[:, n - fill:] = QA_PIXEL_VALUES["fill"]
        _write_band(folder / f"{pid}_QA_PIXEL.TIF", values, transform, crs, 30, nodata=1, **geotiff)
    (folder / f"{pid}_MTL.txt").write_text(_mtl_txt(pid, spacecraft, n, 18.45), encoding="utf-8")
    return folder
