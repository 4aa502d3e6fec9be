"""Test fixtures for the product readers (geoseg.io.sources), written in code from the shipped Hong Kong
sample: a reference stacked GeoTIFF on UTM 49N at 10 m, and the same pixels as a Sentinel-2 SAFE (JP2
bands at 10/20/60 m, product and granule metadata), a STAC Item of per-band COGs and a Landsat C2 L2
folder.  Small (<= 256 px): for tests; the benchmarks build large ones with the same functions.
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
    t = Affine(float(res), 0.0, transform.c, 0.0, -float(res), transform.f)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict = {"width": arr.shape[1], "height": arr.shape[0], "count": 1, "dtype": "uint16",
                     "crs": crs, "transform": t, "nodata": 0}
    profile.update(opts)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)


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
               level: str = "L1C", as_zip: bool = False, drop: tuple[str, ...] = ()) -> Path:
    """A SAFE product of the reference's pixels in ``out_dir`` (its ``.SAFE`` folder, or the ``.zip`` with
    ``as_zip``).  Baseline >= 04.00 stores DN = value + 1000 with RADIO_ADD_OFFSET (L2A: BOA_ADD_OFFSET)
    -1000; ``drop`` leaves band files out (for the missing-band error)."""
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
                    bands_wanted: tuple[str, ...] = REFERENCE_BANDS) -> Path:
    """A STAC Item JSON with one COG per band (the 20 m bands at 20 m) in ``out_dir``.  ``style``:
    ``earth-search`` (keys ``blue``..., ``eo:bands`` and ``raster:bands``), ``planetary-computer`` (keys
    ``B02``...) or ``stac-1.1`` (keys ``B02``..., ``bands`` with ``eo:common_name``, scale/offset/nodata in
    the band).  ``add_offset``: DN stored +1000 with offset -0.1 (baseline 04.00)."""
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
    assets["thumbnail"] = {"href": "./thumbnail.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
    bounds = rasterio.transform.array_bounds(bands["B2"].shape[0], bands["B2"].shape[1], transform)
    west, south, east, north = transform_bounds(crs, "EPSG:4326", bounds[1], bounds[0], bounds[3], bounds[2])
    baseline = "04.00" if add_offset else "02.04"
    item = {
        "type": "Feature", "stac_version": "1.1.0" if style == "stac-1.1" else "1.0.0",
        "id": f"S2A_{TILE[1:]}_20160927_0_L1C", "collection": "sentinel-2-l1c",
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
