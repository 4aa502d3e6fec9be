"""The options of ``vectorize_raster``, validated once: output format, areas and lengths with units, classes,
connectivity, block size, scheduler and workers (one-line :class:`~geoseg.errors.ParameterError` naming the fix)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg._util.execution import LOCAL_SCHEDULERS, check_workers
from geoseg.errors import MissingDependencyError, ParameterError
from geoseg.io.grid import check_block_size

#: vectorize runs its blocks on this machine only (its worker processes are its own, see geoseg.vector.workers)
SCHEDULERS = LOCAL_SCHEDULERS


@dataclass(frozen=True)
class Format:
    key: str
    driver: str
    extensions: tuple[str, ...]
    label: str


FORMATS: dict[str, Format] = {
    "gpkg": Format("gpkg", "GPKG", (".gpkg",), "GeoPackage"),
    "parquet": Format("parquet", "Parquet", (".parquet", ".geoparquet"), "GeoParquet"),
    "fgb": Format("fgb", "FlatGeobuf", (".fgb",), "FlatGeobuf"),
    "geojson": Format("geojson", "GeoJSON", (".geojson", ".json"), "GeoJSON (RFC 7946, WGS84)"),
}
FORMAT_ALIASES = {"geopackage": "gpkg", "geoparquet": "parquet", "flatgeobuf": "fgb", "json": "geojson"}


_AREA_UNITS = {"": 1.0, "m2": 1.0, "m²": 1.0, "sqm": 1.0, "ha": 1e4, "km2": 1e6, "km²": 1e6}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_area(value: str | float | int | None) -> float | None:
    """``'5000'``, ``'5000m2'``, ``'0.5ha'``, ``'1km2'`` -> square metres (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        area = float(value)
    else:
        m = re.fullmatch(_NUMBER + r"\s*([a-zA-Z²][a-zA-Z²0-9]*|)", value.strip())
        unit = m.group(2).lower() if m else None
        if not m or unit not in _AREA_UNITS:
            raise ParameterError(
                f"--min-area {value!r} is not an area; give square metres or hectares, e.g. 5000, 5000m2 or 0.5ha"
            )
        area = float(m.group(1)) * _AREA_UNITS[unit]
    if not math.isfinite(area) or area < 0:
        raise ParameterError(f"--min-area {value!r} must be a non-negative area, e.g. 0.5ha")
    return area


def parse_length(value: str | float | int | None) -> tuple[float, str] | None:
    """``'10'``/``'10m'`` -> (10.0, 'm'); ``'1.5px'`` -> (1.5, 'px'); None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        number, unit = float(value), "m"
    else:
        m = re.fullmatch(_NUMBER + r"\s*(m|px|)", value.strip().lower())
        if not m:
            raise ParameterError(
                f"--simplify {value!r} is not a length; give metres or pixels, e.g. 10, 10m or 1.5px"
            )
        number, unit = float(m.group(1)), m.group(2) or "m"
    if not math.isfinite(number) or number < 0:
        raise ParameterError(f"--simplify {value!r} must be a non-negative tolerance, e.g. 10m")
    return number, unit


def resolve_format(output: str | os.PathLike, fmt: str | None) -> Format:
    if fmt:
        key = FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if key not in FORMATS:
            raise ParameterError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return FORMATS[key]
    suffix = Path(output).suffix.lower()
    for f in FORMATS.values():
        if suffix in f.extensions:
            return f
    known = ", ".join(e for f in FORMATS.values() for e in f.extensions)
    raise ParameterError(
        f"cannot tell the output format from {os.fspath(output)!r}; use one of the extensions {known} "
        "or pass --format"
    )


def check_format_dependencies(fmt: Format) -> None:
    import importlib.util

    if fmt.key == "parquet" and importlib.util.find_spec("pyarrow") is None:  # found, not imported
        raise MissingDependencyError(
            "GeoParquet output needs the pyarrow package; install it (pip install pyarrow) "
            "or choose another format, e.g. -o landcover.gpkg"
        )


def select_classes(classes: Sequence[str | int] | str | None, names: dict[int, str]) -> tuple[int, ...] | None:
    if classes is None:
        return None
    items = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else list(classes)
    items = [c for c in items if c != ""]
    if not items:
        raise ParameterError("--classes is empty; give class names or values, e.g. --classes forest,water")
    by_name = {n.lower(): v for v, n in names.items()}
    out = []
    for item in items:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and re.fullmatch(r"-?\d+", item)):
            out.append(int(item))
        elif str(item).lower() in by_name:
            out.append(by_name[str(item).lower()])
        else:
            known = ", ".join(f"{n} ({v})" for v, n in sorted(names.items())) or "none: the raster has no class names"
            raise ParameterError(f"unknown class {item!r} in --classes; known classes: {known}; or give class values")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class Options:
    """The raster-independent options, checked."""

    format: Format
    connectivity: int
    block_size: int
    scheduler: str
    workers: int
    min_area_m2: float | None
    tolerance: tuple[float, str] | None  # (value, "m" or "px")

    def sieve_pixels(self, pixel_area: float) -> int:
        """The sieve threshold in pixels for ``min_area_m2`` (0: no sieve)."""
        if not self.min_area_m2:
            return 0
        pixels = max(0, math.ceil(self.min_area_m2 / pixel_area - 1e-9))
        return pixels if pixels > 1 else 0

    def simplify_px(self, pixel_side: float) -> float | None:
        """The simplification tolerance in pixels (None: no simplification)."""
        if not self.tolerance or self.tolerance[0] <= 0:
            return None
        return self.tolerance[0] if self.tolerance[1] == "px" else self.tolerance[0] / pixel_side


def check_options(output: str | os.PathLike, format: str | None, connectivity: int, block_size: int,
                  scheduler: str, workers: int | None, min_area: str | float | None,
                  simplify: str | float | None) -> Options:
    """Validate the options in the order the user reads them; the first problem raises."""
    fmt = resolve_format(output, format)
    check_format_dependencies(fmt)
    if connectivity not in (4, 8):
        raise ParameterError(f"connectivity {connectivity} must be 4 or 8")
    bs = check_block_size(block_size, align=1)  # vectorize only reads blocks: any size
    if scheduler not in SCHEDULERS:  # (no tcp:// cluster: the blocks run in this machine's processes)
        raise ParameterError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    n_workers = check_workers(workers)
    return Options(fmt, connectivity, bs, scheduler, n_workers, parse_area(min_area), parse_length(simplify))


def plan_vector_output(out_dir: str | os.PathLike, vector: str | None, options: dict | None
                       ) -> tuple[Path | None, dict]:
    """``--vector FORMAT`` of a command that also polygonizes its class map (``geoseg predict``, ``geoseg mosaic``):
    ``OUT/landcover.<ext>`` (None without it) and the options given (``min_area``, ``simplify``), checked now,
    before the run; options without ``--vector`` are an error."""
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if vector is None:
        if opts:
            raise ParameterError(f"{', '.join('--' + k.replace('_', '-') for k in opts)} only apply with --vector; "
                                 "add --vector gpkg (or parquet, fgb, geojson), or drop them")
        return None, opts
    fmt = resolve_format("", vector)
    parse_area(opts.get("min_area"))  # bad values fail now, not after the work
    parse_length(opts.get("simplify"))
    return Path(out_dir) / f"landcover{fmt.extensions[0]}", opts
