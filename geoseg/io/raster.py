"""Reading scenes: inspection, validation and windowed reads with a valid-pixel mask.

No torch, no dask.  Functions take paths (never open datasets) where they may run
inside a dask task.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window as RioWindow

from geoseg.errors import BandMismatchError, InputError, InputFileError, NotGeoreferencedError
from geoseg.io.area import pixel_area_m2 as pixel_area_m2  # re-exported: moved to io.area
from geoseg.io.grid import Window
from geoseg.io.sources.bands import canonical_band

#: GDAL's block cache per process, in bytes, unless the environment sets ``GDAL_CACHEMAX``.
#: GDAL's own default is 5 % of physical memory (1.2 GB on a 24 GB machine), and windowed
#: reads of a large scene fill it: the cache, not geoseg's buffers, would then dominate peak
#: memory.  128 MiB holds a full row of 512-px input tiles of a 20,000 px wide 4-band scene.
GDAL_CACHE_BYTES = 128 * 2**20


def configure_gdal_cache(nbytes: int = GDAL_CACHE_BYTES) -> None:
    """Cap GDAL's (process-wide) block cache at ``nbytes``; a ``GDAL_CACHEMAX`` set in the
    environment wins.  Cheap and idempotent: every task calls it, so it holds in worker
    processes and on dask.distributed workers too."""
    if "GDAL_CACHEMAX" in os.environ:
        return
    if get_gdal_config("GDAL_CACHEMAX") != nbytes:
        set_gdal_config("GDAL_CACHEMAX", nbytes)


#: GDAL configuration a run's parent forwards to its tasks (:func:`gdal_config_of_environ`): names with these
#: prefixes, except the cache size (the tasks set it from the spec) and anything that looks like a secret
#: (credentials belong in the workers' own environment, never in a task graph).
_FORWARD_PREFIXES = ("GDAL_", "CPL_", "VSI_", "OGR_", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_NO_SIGN_REQUEST",
                     "AWS_S3_ENDPOINT", "AWS_VIRTUAL_HOSTING", "AWS_HTTPS", "AWS_REQUEST_PAYER")
_SECRET = re.compile(r"SECRET|TOKEN|PASSWORD|USERPWD|ACCESS_KEY|HEADER|COOKIE|BEARER|CREDENTIAL", re.IGNORECASE)


def gdal_config_of_environ(environ: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The GDAL/rasterio settings of this process's environment that tasks on other hosts need as well
    (``GDAL_HTTP_*``, ``GDAL_DISABLE_READDIR_ON_OPEN``, ``CPL_VSIL_CURL_*``, ``AWS_REGION``...), sorted."""
    env = os.environ if environ is None else environ
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(_FORWARD_PREFIXES)
                        and k != "GDAL_CACHEMAX" and not _SECRET.search(k)))


def gdal_options(options: Sequence[tuple[str, str]]) -> contextlib.AbstractContextManager[Any]:
    """Forwarded GDAL options in force for the calling thread while the block runs (``rasterio.Env``: GDAL's
    options are per thread), except those this process's own environment sets (a worker's own settings win)."""
    own = {k: v for k, v in options if k not in os.environ}
    return rasterio.Env(**own) if own else contextlib.nullcontext()


_HELD: dict[str, tuple[tuple[str, str], Any]] = {}
_HELD_LOCK = threading.Lock()


@contextlib.contextmanager
def shared_dataset(name: str, run_key: str) -> Iterator[Any]:
    """``rasterio.open(name)`` opened once per process and run (``run_key``) and lent to one thread at a time.

    GDAL keeps a dataset's decoded blocks only while that dataset is open: a scene reopened for every task batch
    decoded each JPEG 2000 tile of a Sentinel-2 SAFE again for every batch that touched it (41 x the stacked
    GeoTIFF's read time at 6144², benchmarks/read_sources.py), and two handles would decode every block twice.
    The lock is held while the caller reads (the prediction reads all its tiles before its forward pass).
    :func:`release_shared` closes it when the run ends."""
    with _HELD_LOCK:
        held = _HELD.get("scene")
        if held is None or held[0] != (run_key, name):
            if held is not None:
                held[1].close()
            _HELD["scene"] = ((run_key, name), rasterio.open(name))
        yield _HELD["scene"][1]


def release_shared() -> None:
    """Close the dataset :func:`shared_dataset` holds in this process, if any."""
    with _HELD_LOCK:
        held = _HELD.pop("scene", None)
        if held is not None:
            held[1].close()


@dataclass(frozen=True)
class SceneInfo:
    """What geoseg needs to know of an input raster (no open handles)."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    descriptions: tuple[str | None, ...]
    per_dataset_mask: bool  # has nodata or a mask band: read masks instead of trusting values
    nodata_only_mask: bool = False  # the only mask is the nodata value: test values, no mask read
    acquired: str | None = None  # acquisition time (ISO 8601 UTC) named by a dataset tag, see ACQUISITION_TAGS
    acquired_tag: str | None = None  # the tag it came from
    level: str | None = None  # product level a scene reader declared (tag GEOSEG_LEVEL: L1C, L2A, ...)
    sensor: str | None = None  # sensor a scene reader declared (tag GEOSEG_SENSOR: sentinel-2, landsat-8, ...)
    dataset: str | None = None  # what GDAL opens when it is not ``path`` (a product reader's VRT XML)

    @property
    def gdal_name(self) -> str:
        """The name to ``rasterio.open``: the product's stacked VRT, or the file itself."""
        return self.dataset if self.dataset is not None else os.path.abspath(self.path)

    @property
    def georeferenced(self) -> bool:
        return _georeferenced(self.crs_wkt, self.transform)

    @property
    def window(self) -> Window:
        return Window(0, 0, self.height, self.width)


@dataclass(frozen=True)
class ClassRaster:
    """One band of class codes (geoseg's landcover.tif or any integer raster), as evaluate and
    vectorize inspect it: no open handles."""

    path: str
    width: int
    height: int
    dtype: str
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    masked: bool  # has nodata or a mask band: read masks (read_band)
    band: int = 1
    class_names: dict[int, str] = field(default_factory=dict)  # from CLASS_<value> band tags
    colors: dict[int, str] = field(default_factory=dict)  # "#RRGGBB" per value of the colour table, if any

    @property
    def georeferenced(self) -> bool:
        return _georeferenced(self.crs_wkt, self.transform)


def _georeferenced(crs_wkt: str | None, transform: tuple[float, ...]) -> bool:
    return bool(crs_wkt) and tuple(transform) != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


#: Dataset tags naming when a scene was acquired, most specific first: geoseg's own products, GDAL's
#: Sentinel-2 SAFE metadata, Landsat MTL, and common conventions (the shipped samples use ``DATE``).
ACQUISITION_TAGS = ("ACQUISITION_DATETIME", "DATATAKE_1_DATATAKE_SENSING_START", "PRODUCT_START_TIME",
                    "SENSING_TIME", "DATE_ACQUIRED", "ACQUISITION_DATE", "DATE")


def parse_datetime(text: str) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC) of a date or date-time text (``20160927``, ``2016-09-27``,
    ISO 8601 with a time and zone; a time without zone is taken as UTC); None if it is not one."""
    import datetime as dt

    text = str(text).strip()
    if re.fullmatch(r"\d{8}", text):
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def acquisition_time(tags: dict[str, str]) -> tuple[str, str] | None:
    """(ISO 8601 UTC time, tag) of the first :data:`ACQUISITION_TAGS` entry that parses, or None."""
    for key in ACQUISITION_TAGS:
        if key in tags and (iso := parse_datetime(tags[key])):
            return iso, key
    return None


def open_scene(path: str | os.PathLike, allow_ungeoreferenced: bool = False) -> SceneInfo:
    """Inspect ``path``; raise a one-line InputError if it is missing, not a raster, or not georeferenced."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"input scene {path} does not exist; check the path")
    if os.path.isdir(path):
        raise InputFileError(f"input scene {path} is a directory; give a GeoTIFF file, a Sentinel-2 .SAFE "
                             "folder or a Landsat Collection 2 folder")
    return inspect_dataset(path, path, allow_ungeoreferenced)


def inspect_dataset(name: str, path: str, allow_ungeoreferenced: bool = False) -> SceneInfo:
    """Inspect the GDAL dataset ``name`` (a file, or a product reader's VRT XML) known to the user as
    ``path``; the one-line errors of :func:`open_scene` name ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # reported below, as an error or not
            src = rasterio.open(name)
        with src:
            if src.count == 0:
                raise InputError(
                    f"{path} has no raster band (GDAL opened it as a {src.driver} dataset); give a raster "
                    "with image bands (a GeoTIFF or VRT), a Sentinel-2 .SAFE folder or zip, a STAC Item JSON "
                    "with one asset per band, or a Landsat Collection 2 folder"
                )
            flags = src.mask_flag_enums
            tags = src.tags()
            acquired, acquired_tag = acquisition_time(tags) or (None, None)
            info = SceneInfo(
                path=path,
                width=src.width,
                height=src.height,
                count=src.count,
                dtype=src.dtypes[0],
                crs_wkt=src.crs.to_wkt() if src.crs else None,
                transform=tuple(src.transform)[:6],
                nodata=src.nodata,
                descriptions=tuple(src.descriptions),
                per_dataset_mask=any(MaskFlags.all_valid not in f for f in flags),
                nodata_only_mask=src.nodata is not None and all(set(f) == {MaskFlags.nodata} for f in flags),
                acquired=acquired,
                acquired_tag=acquired_tag,
                level=tags.get("GEOSEG_LEVEL"),
                sensor=tags.get("GEOSEG_SENSOR"),
                dataset=None if name == path else name,
            )
    except RasterioIOError:
        raise InputFileError(f"{path} is not a readable raster; give a GeoTIFF (or another GDAL raster)") from None
    if not info.georeferenced and not allow_ungeoreferenced:
        what = "CRS" if info.crs_wkt is None else "geotransform"
        raise NotGeoreferencedError(
            f"{path} has no {what}; georeference it (e.g. gdal_edit.py -a_srs/-a_ullr) "
            "or pass --allow-ungeoreferenced to work in pixel coordinates"
        )
    return info


_CLASS_TAG = re.compile(r"^CLASS_(-?\d+)$")


def class_names_from_tags(*tag_dicts: dict[str, str]) -> dict[int, str]:
    """``{value: name}`` from ``CLASS_<value>=<name>`` tags (as ``geoseg predict`` writes them).

    Later dictionaries win, e.g. ``class_names_from_tags(src.tags(), src.tags(1))``.
    """
    out: dict[int, str] = {}
    for tags in tag_dicts:
        for k, v in tags.items():
            m = _CLASS_TAG.match(k.upper())
            if m and str(v).strip():
                out[int(m.group(1))] = str(v).strip()
    return out


def match_bands(card_bands: Sequence[str], descriptions: Sequence[str | None], count: int) -> list[int]:
    """1-based input band indexes for the model's bands, matched by name (case-insensitive)."""
    names = [(d or "").strip() for d in descriptions]
    n = len(card_bands)
    if not any(names):
        if count == n:
            warnings.warn(f"the input's bands have no names (band descriptions): assuming they are the model's "
                          f"{n} bands in its order, {','.join(card_bands)}; name them or pass --bands to be sure",
                          UserWarning, stacklevel=3)
            return list(range(1, count + 1))
        if count < n:
            raise BandMismatchError(
                f"this model needs these {n} bands ({','.join(card_bands)}) and the input has {count} unnamed "
                f"bands; give a scene with all {n} (--bands can only choose among the input's {count}), "
                "or another model"
            )
        raise BandMismatchError(
            f"the input has {count} unnamed bands but the model needs {n} "
            f"({','.join(card_bands)}); pass --bands with {n} band numbers, e.g. --bands "
            + ",".join(str(i + 1) for i in range(n))
        )
    lookup: dict[str, int] = {}
    for i, name in enumerate(names):
        if name:
            lookup.setdefault(band_key(name), i + 1)
    missing = [b for b in card_bands if band_key(b) not in lookup]
    if missing:
        raise BandMismatchError(
            f"the input lacks band(s) {','.join(missing)} needed by the model (input has "
            f"{','.join(n or '?' for n in names)}); pass --bands with the band numbers to use"
        )
    return [lookup[band_key(b)] for b in card_bands]


def band_key(name: str) -> str:
    """How band names are compared: the alias table's canonical name (``B02``, ``blue`` -> ``B2``), else the
    name itself, case-insensitive."""
    return canonical_band(name) or name.strip().lower()


def select_bands(info: SceneInfo, model_bands: Sequence[str], bands: Sequence[int] | None) -> list[int]:
    """1-based band indexes to feed the model: explicit ``bands`` or matched by band description."""
    if bands is None:
        return match_bands(model_bands, info.descriptions, info.count)
    bands = list(bands)
    if len(bands) != len(model_bands):
        raise BandMismatchError(
            f"--bands lists {len(bands)} bands but the model needs {len(model_bands)} "
            f"({','.join(model_bands)}); give exactly {len(model_bands)} band numbers"
        )
    bad = [b for b in bands if not 1 <= b <= info.count]
    if bad:
        raise BandMismatchError(
            f"--bands {','.join(map(str, bad))} out of range: the input has bands 1..{info.count}"
        )
    return bands


def read_band(src: rasterio.DatasetReader, band: int, window: Window, masked: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)`` of one band over ``window`` (inside the raster): valid per the dataset's
    mask when ``masked`` (nodata or a mask band), else everywhere."""
    rw = RioWindow(window.col_off, window.row_off, window.width, window.height)
    data = src.read(band, window=rw)
    valid = src.read_masks(band, window=rw) > 0 if masked else np.ones(data.shape, dtype=bool)
    return data, valid


def read_window(
    src: rasterio.DatasetReader,
    window: Window,
    bands: Sequence[int],
    use_masks: bool,
    input_nodata: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` over ``window`` as float32, padding outside the raster.

    Returns ``(data (C, h, w) float32, valid (h, w) bool)``.  A pixel is valid when
    it lies inside the raster and every selected band is valid: per the dataset's
    mask when ``use_masks``, else ``!= input_nodata`` (the raster's nodata value, or
    the model card's when the raster declares none).
    """
    data = np.zeros((len(bands), window.height, window.width), dtype=np.float32)
    valid = np.zeros((window.height, window.width), dtype=bool)
    inside = window.intersection(Window(0, 0, src.height, src.width))
    if inside is None:
        return data, valid
    rio_win = RioWindow(inside.col_off, inside.row_off, inside.width, inside.height)
    rs, cs = inside.slices_in(window)
    raw = src.read(list(bands), window=rio_win)
    data[:, rs, cs] = raw
    if use_masks:
        v = np.all(src.read_masks(list(bands), window=rio_win) > 0, axis=0)
    elif input_nodata is not None:
        v = ~np.any(raw == input_nodata, axis=0)
    else:
        v = np.ones(raw.shape[1:], dtype=bool)
    if np.issubdtype(raw.dtype, np.floating):
        v &= np.all(np.isfinite(raw), axis=0)
    valid[rs, cs] = v
    return data, valid


def _crs_label(wkt: str | None) -> str:
    if not wkt:
        return "none"
    from rasterio.crs import CRS

    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def grid_differences(pred, truth) -> list[str]:
    """Human-readable differences between two rasters' grids (empty when they match).

    Takes anything with ``crs_wkt``, ``transform`` (6 affine terms), ``width`` and ``height``.
    """
    from rasterio.crs import CRS

    diffs = []
    if (pred.crs_wkt is None) != (truth.crs_wkt is None) or (
        pred.crs_wkt and truth.crs_wkt and CRS.from_wkt(pred.crs_wkt) != CRS.from_wkt(truth.crs_wkt)
    ):
        diffs.append(f"CRS {_crs_label(pred.crs_wkt)} vs {_crs_label(truth.crs_wkt)}")
    pa, pb, pc, pd, pe, pf = pred.transform
    ta, tb, tc, td, te, tf = truth.transform
    size = max(abs(pa), abs(pe), 1e-12)
    n = max(pred.width, pred.height, 1)
    # Scale terms may differ by < 1/1000 pixel over the whole raster; offsets by < 1/1000 pixel.
    if any(abs(x - y) * n > 1e-3 * size for x, y in ((pa, ta), (pb, tb), (pd, td), (pe, te))):
        diffs.append(f"pixel size {abs(pa):g}x{abs(pe):g} vs {abs(ta):g}x{abs(te):g}")
    elif abs(pc - tc) > 1e-3 * size or abs(pf - tf) > 1e-3 * size:
        diffs.append(f"origin ({pc:.3f}, {pf:.3f}) vs ({tc:.3f}, {tf:.3f})")
    if (pred.width, pred.height) != (truth.width, truth.height):
        diffs.append(f"size {pred.width}x{pred.height} vs {truth.width}x{truth.height} pixels")
    return diffs
