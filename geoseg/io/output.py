"""Writing products: streamed block writes to a temporary GeoTIFF, then a COG, then an atomic rename.

Nothing is ever written at a final path until it is complete: a product's metadata is defined once by
``OUT/.<name>.<id>.part.tif`` (tiled, sparse), its blocks are files of the run's block journal
(:mod:`geoseg.io.journal`), a VRT mosaic of them with the part's metadata is converted by GDAL's COG
driver to ``OUT/.<name>.<id>.cog.tif``, and that is renamed onto ``OUT/<name>.tif``.  No torch, no dask.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window as RioWindow

from geoseg._util.atomic import remove_quietly
from geoseg._util.lock import file_lock
from geoseg.errors import OutputError, OutputExistsError, OutputLockedError
from geoseg.io.codes import ClassInfo
from geoseg.io.grid import BLOCK_ALIGN, Window
from geoseg.io.raster import SceneInfo
from geoseg.io.space import writing
from geoseg.io.warp import Grid

NODATA = 255


@dataclass(frozen=True)
class Product:
    """One output raster: its final path, temp paths, bands and styling."""

    name: str  # e.g. "landcover"
    final: str
    part: str
    cog: str
    count: int
    descriptions: tuple[str, ...]
    overview_resampling: str  # MODE for class codes, AVERAGE for continuous values
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    band_tags: tuple[dict[str, str], ...] = ()
    scale: float | None = None
    units: str | None = None


def product_paths(out_dir: str | os.PathLike, name: str, run_id: str) -> tuple[str, str, str]:
    d = Path(out_dir)
    return str(d / f"{name}.tif"), str(d / f".{name}.{run_id}.part.tif"), str(d / f".{name}.{run_id}.cog.tif")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def class_colormap(classes: Sequence[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    cmap = dict.fromkeys(range(256), (0, 0, 0, 0))
    for c in classes:
        cmap[c.value] = (*c.rgb, 255)
    return cmap


def landcover_product(out_dir: str, run_id: str, classes: Sequence[ClassInfo], model_id: str) -> Product:
    final, part, cog = product_paths(out_dir, "landcover", run_id)
    names = {f"CLASS_{c.value}": c.name for c in classes}
    return Product(
        name="landcover",
        final=final,
        part=part,
        cog=cog,
        count=1,
        descriptions=("land cover class",),
        overview_resampling="MODE",
        colormap=class_colormap(classes),
        tags={"GEOSEG_MODEL": model_id, "GEOSEG_PRODUCT": "landcover"},
        band_tags=(
            {
                **names,
                "CLASS_VALUES": ",".join(str(c.value) for c in classes),
                "CLASS_NAMES": ",".join(c.name for c in classes),
                "NODATA_MEANING": "no valid input",
            },
        ),
    )


def percent_product(out_dir: str, run_id: str, name: str, descriptions: Sequence[str], model_id: str) -> Product:
    final, part, cog = product_paths(out_dir, name, run_id)
    return Product(
        name=name,
        final=final,
        part=part,
        cog=cog,
        count=len(descriptions),
        descriptions=tuple(descriptions),
        overview_resampling="AVERAGE",
        tags={"GEOSEG_MODEL": model_id, "GEOSEG_PRODUCT": name},
        scale=0.01,
        units="probability (percent; multiply by scale 0.01)",
    )


#: GeoPackage creation options for every layer geoseg writes: version 1.2 (GDAL's default is 1.4,
#: which GDAL < 3.7, e.g. the one inside QGIS 3.22 LTR, reports as "may only be partially supported").
#: geoseg uses nothing newer than 1.2 (features, attribute tables, the QGIS layer_styles table).
GPKG_DATASET_OPTIONS = {"VERSION": "1.2"}


def check_output_dir(out_dir: str | os.PathLike, products: Sequence[str], overwrite: bool) -> None:
    """Refuse early: final paths that exist (without overwrite), or a directory we cannot write into."""
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise OutputError(f"output {d} exists and is not a directory; give a folder path with -o")
    if not overwrite:
        existing = [p for p in products if (d / p).exists()]
        if existing:
            raise OutputExistsError(
                f"{', '.join(str(d / p) for p in existing)} already exists; pass --overwrite or choose another -o"
            )
    ensure_writable_dir(d, "choose a writable -o folder")


def ensure_writable_dir(folder: str | os.PathLike, fix: str) -> None:
    """Create ``folder`` if needed and prove a file can be written into it (a probe file, removed);
    else a one-line :class:`OutputError` ending in ``fix``."""
    d = Path(folder)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".geoseg-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write into {d} ({e.strerror}); {fix}") from None


def create_part(product: Product, info: SceneInfo | Grid) -> None:
    """Create the sparse, tiled temporary GeoTIFF that blocks are streamed into, on the grid of ``info`` (a scene's
    or a :class:`~geoseg.io.warp.Grid`)."""
    profile = {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": product.count,
        "dtype": "uint8",
        "nodata": NODATA,
        "crs": CRS.from_wkt(info.crs_wkt) if info.crs_wkt else None,
        "transform": Affine(*info.transform),
        "tiled": True,
        "blockxsize": BLOCK_ALIGN,
        "blockysize": BLOCK_ALIGN,
        "compress": "deflate",
        "predictor": 2,
        "sparse_ok": True,
        "bigtiff": "if_safer",
        "interleave": "band" if product.count > 1 else "pixel",
    }
    with rasterio.open(product.part, "w", **profile) as dst:
        for i, desc in enumerate(product.descriptions, start=1):
            dst.set_band_description(i, desc)
        if product.scale is not None:
            dst.scales = tuple([product.scale] * product.count)
            dst.offsets = tuple([0.0] * product.count)
        if product.units:
            dst.units = tuple([product.units] * product.count)
        if product.colormap is not None:
            dst.write_colormap(1, product.colormap)
        dst.update_tags(AREA_OR_POINT="Area", **product.tags)
        for i, t in enumerate(product.band_tags, start=1):
            dst.update_tags(i, **t)


#: Temporary names a run creates in OUT/ (see product_paths); all hidden, never final.
_TEMP_PATTERNS = (".*.part.*", ".*.cog.tif", ".*.cog.tif.aux.xml",
                  ".run.*.json.tmp")


@contextmanager
def folder_lock(folder: str | os.PathLike, lock_name: str, stale: Sequence[str], *, wait: bool = False,
                busy: Callable[[], BaseException] | None = None, subfolders: Sequence[str] = ()) -> Iterator[None]:
    """Hold ``folder/lock_name`` for a run and, once it is held, remove what a killed run left behind:
    files matching the ``stale`` glob patterns in ``folder`` (and in its ``subfolders``).  Nobody else can be
    writing them while we hold the lock.  Held by another run: ``busy()`` (or wait, with ``wait``)."""
    d = Path(folder)
    with file_lock(d / lock_name, wait=wait, busy=busy):
        for where in (d, *(d / s for s in subfolders)):
            for pattern in stale:
                for path in where.glob(pattern):
                    with suppress(OSError):
                        path.unlink()
        yield


def output_dir_lock(out_dir: str | os.PathLike) -> AbstractContextManager[None]:
    """Hold ``OUT/.geoseg.lock`` for a whole run.

    A second run into the same folder fails at once with OutputLockedError (exit 75)
    instead of interleaving its files.  While the lock is held, temporaries left in
    the folder by a killed run are stale, and are removed.
    """
    d = Path(out_dir)

    def busy() -> OutputLockedError:
        return OutputLockedError(f"another geoseg run is writing into {d}; wait for it to finish or choose another -o")

    return folder_lock(d, ".geoseg.lock", _TEMP_PATTERNS, busy=busy)


def mosaic_vrt(product: Product, vrt: str | os.PathLike, blocks: Sequence[tuple[Window, str]], first_band: int
               ) -> str:
    """A VRT of ``product`` assembled from block files (``(window, file)``; bands ``first_band`` ..
    ``first_band + count - 1`` of each file are the product's), with every piece of metadata of the product's
    temporary GeoTIFF (:func:`create_part`: grid, nodata, colours, names, tags, scale): what the COG is built from.
    Block files are named relative to the VRT (they lie beside it)."""
    import xml.etree.ElementTree as ET

    rasterio.shutil.copy(product.part, vrt, driver="VRT")  # the metadata of the one template
    tree = ET.parse(vrt)
    where = Path(vrt).parent
    for band in tree.getroot().iter("VRTRasterBand"):
        k = int(band.get("band", "1"))
        for old in [c for c in band if c.tag.endswith("Source")]:
            band.remove(old)
        for w, path in blocks:
            src = ET.SubElement(band, "SimpleSource")
            name = ET.SubElement(src, "SourceFilename", relativeToVRT="1")
            name.text = os.path.relpath(path, where)
            ET.SubElement(src, "SourceBand").text = str(first_band + k - 1)
            ET.SubElement(src, "SourceProperties", RasterXSize=str(w.width), RasterYSize=str(w.height),
                          DataType="Byte", BlockXSize=str(BLOCK_ALIGN), BlockYSize=str(BLOCK_ALIGN))
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w.width), ySize=str(w.height))
            ET.SubElement(src, "DstRect", xOff=str(w.col_off), yOff=str(w.row_off), xSize=str(w.width),
                          ySize=str(w.height))
    tree.write(vrt)
    return str(vrt)


def write_block(part_path: str, window: Window, data: np.ndarray) -> None:
    """Write a (bands, h, w) uint8 block into a temporary GeoTIFF, serialised by a file lock on one host
    (``geoseg change``; a prediction's blocks are journal files instead, :mod:`geoseg.io.journal`)."""
    if data.ndim == 2:
        data = data[None]
    with file_lock(part_path + ".lock"), rasterio.open(part_path, "r+") as dst:
        dst.write(data, window=RioWindow(window.col_off, window.row_off, window.width, window.height))


def to_cog(src: str | os.PathLike, dst: str | os.PathLike, overview_resampling: str, **creation: str | int) -> None:
    """Convert a finished GeoTIFF into a Cloud-Optimized GeoTIFF with GDAL's COG driver (DEFLATE; more
    creation options in ``creation``).  Every COG geoseg writes goes through here."""
    rasterio.shutil.copy(src, dst, driver="COG", COMPRESS="DEFLATE", OVERVIEW_RESAMPLING=overview_resampling,
                         **creation)


def build_cog(product: Product, source: str | os.PathLike | None = None) -> str:
    """Convert the finished temporary GeoTIFF (or ``source``, e.g. a :func:`mosaic_vrt` of it) to a COG beside
    it (the caller renames it into place); a full disk: one line (exit 5)."""
    writing(os.path.dirname(product.cog) or ".", to_cog, product.part if source is None else source, product.cog,
            product.overview_resampling, PREDICTOR="YES", BLOCKSIZE=512, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    remove_quietly(product.part, product.part + ".lock")
    return product.cog


def remove_with_sidecars(*paths: str | os.PathLike) -> None:
    """Remove files and SQLite's side files of them (a GeoPackage's -wal, -shm, -journal), if there."""
    remove_quietly(*(f"{os.fspath(p)}{extra}" for p in paths for extra in ("", "-wal", "-shm", "-journal")))


def discard(products: Sequence[Product]) -> None:
    """Remove every temporary file of ``products`` (after a failure or interruption)."""
    for p in products:
        remove_quietly(p.part, p.part + ".lock", p.cog, p.part + ".aux.xml", p.cog + ".aux.xml")
