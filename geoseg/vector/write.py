"""Writing vectorized polygons: staged ``.npz`` chunks -> one output file.

:func:`write_staged` reads the staged polygons (``block-*.npz`` from the block tasks,
``merged-*.npz`` from the seam merge: id, class value, WKB, area, perimeter), appends them to a
GeoPackage in chunks and returns the per-class counts and areas.  GeoPackage appends are cheap
(SQLite); FlatGeobuf and GeoJSON are not (GDAL rewrites the whole file on every append, and a
GeoJSON append drops the RFC 7946 layer options), so those are staged as a GeoPackage and, on the
last call, converted in one streamed pass (``pyogrio.raw.open_arrow`` -> ``write_arrow``: GDAL's
GeoJSON writer reprojects to WGS84 itself under RFC 7946).  GeoParquet goes through pyarrow in one
call.

It is a plain function over a :class:`SinkSpec` (paths and strings only), so
:mod:`geoseg.vector.api` can run it in a forked worker process: the process that merges never loads
the writer's libraries.  There, with ``lean=True``, pyogrio is imported without its optional
pandas/geopandas/pyarrow/pyproj (about 87 MiB; only GeoParquet needs any of them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.io.output import GPKG_DATASET_OPTIONS, remove_with_sidecars
from geoseg.vector.staging import trim_heap, unpacked

__all__ = ["SinkSpec", "WriteResult", "write_staged", "COLUMNS"]

#: The attribute columns of every output, in order (the geometry follows).
COLUMNS = ("id", "class", "class_name", "area_m2", "area_ha", "perimeter_m")
#: At most this many features, or about this many bytes of WKB, per append to the output.
WRITE_CHUNK = 100_000
WRITE_CHUNK_BYTES = 16 * 2**20
#: pyogrio's optional imports that ``pyogrio.raw.write`` does not need
_DATAFRAME_MODULES = ("pandas", "geopandas", "pyarrow", "pyproj")


@dataclass(frozen=True)
class SinkSpec:
    """Where and how to write: everything a worker process needs, as plain values."""

    path: str  # the temporary output path
    key: str  # gpkg | parquet | fgb | geojson
    driver: str  # the GDAL driver (unused for parquet)
    layer: str  # layer name (GeoPackage; FlatGeobuf's header; not written for GeoJSON)
    crs_wkt: str
    crs_ogr: str  # the CRS as given to GDAL: "EPSG:<code>" when it has one, else WKT
    names: dict[int, str] = field(default_factory=dict)  # class value -> name

    @property
    def staged_path(self) -> str:
        """Where chunks are appended: the output itself for GeoPackage and GeoParquet, else a
        GeoPackage beside it (converted on the last call)."""
        return self.path if self.key in ("gpkg", "parquet") else self.path + ".gpkg"


@dataclass
class WriteResult:
    count: int
    stats: dict[int, list]  # class value -> [features, area m²]


def write_staged(sink: SinkSpec, paths: Sequence[str], append: bool, final: bool = True,
                 lean: bool = False) -> WriteResult:
    """Write the polygons staged in ``paths``, in order.

    ``append=False`` creates the layer (also when there is no polygon); ``append=True`` adds to
    it; ``final``: this is the last call (FlatGeobuf and GeoJSON are then converted from their
    staging GeoPackage into ``sink.path``).  GeoParquet is written in one call (append=False,
    final=True).  ``lean``: in a worker process that only writes, import pyogrio without its
    dataframe dependencies (see the module doc).
    """
    if sink.key == "parquet" and (append or not final):
        raise ValueError("GeoParquet output is written in one call (it cannot be appended to)")
    if lean and sink.key != "parquet":
        _import_pyogrio_without_dataframes()
    out = _Sink(sink, started=append)
    stats: dict[int, list] = {}
    pending: list[dict] = []
    pending_n = pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_n, pending_bytes
        if pending:
            out.write(_frame(pending, sink.names))
        pending, pending_n, pending_bytes = [], 0, 0
        trim_heap()

    for chunk in _staged_chunks(paths):
        vals, inverse, counts = np.unique(chunk["value"], return_inverse=True, return_counts=True)
        areas = np.bincount(inverse, weights=chunk["area_m2"], minlength=vals.size)
        for v, cnt, area in zip(vals, counts, areas):
            s = stats.setdefault(int(v), [0, 0.0])
            s[0] += int(cnt)
            s[1] += float(area)
        pending.append(chunk)
        pending_n += len(chunk["id"])
        pending_bytes += sum(len(w) for w in chunk["wkb"])
        if pending_n >= WRITE_CHUNK or pending_bytes >= WRITE_CHUNK_BYTES:
            flush()
    if not pending and not append and not out.count:  # an empty layer still gets created with its schema
        pending = [{"id": np.zeros(0, np.int64), "value": np.zeros(0, np.int64), "wkb": [],
                    "area_m2": np.zeros(0), "perimeter_m": np.zeros(0)}]
    flush()
    out.close()
    if final and sink.staged_path != sink.path:
        _convert(sink)
    return WriteResult(out.count, stats)


def _convert(sink: SinkSpec) -> None:
    """The staging GeoPackage -> FlatGeobuf / GeoJSON at ``sink.path``, streamed in Arrow batches
    (one layer creation, so RFC 7946 holds for every GeoJSON feature); the GeoPackage is removed."""
    import pyogrio.raw

    layer_options = {"RFC7946": "YES", "WRITE_NAME": "NO"} if sink.key == "geojson" else None
    with pyogrio.raw.open_arrow(sink.staged_path, batch_size=_CONVERT_BATCH) as (meta, stream):
        pyogrio.raw.write_arrow(stream, sink.path, layer=sink.layer, driver=sink.driver,
                                geometry_name=meta["geometry_name"] or "geom", geometry_type="MultiPolygon",
                                crs=meta["crs"], layer_options=layer_options)
    remove_with_sidecars(sink.staged_path)




_CONVERT_BATCH = 1000  # features per Arrow batch (a smaller batch holds less beside a huge polygon)


def _import_pyogrio_without_dataframes() -> None:
    """Import pyogrio with pandas, geopandas, pyarrow and pyproj hidden (pyogrio imports them
    only if they are there); they stay importable afterwards, only pyogrio's dataframe
    functions are then disabled in this process.  For worker processes that only write."""
    import multiprocessing

    if "pyogrio" in sys.modules or multiprocessing.parent_process() is None:
        # already loaded, or not a worker process: other code here may need pyogrio's dataframe
        # functions (hiding the modules disables them for the process's lifetime)
        return
    hidden = [m for m in _DATAFRAME_MODULES if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # "import m" raises ImportError
    try:
        import pyogrio.raw  # noqa: F401  (imported for its side effect: loaded lean)
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]


class _Sink:
    """Appends attribute/WKB chunks to one output file of a given format."""

    def __init__(self, spec: SinkSpec, started: bool = False) -> None:
        self.spec = spec
        self.count = 0
        self._started = started
        self._parquet: Any = None  # a pyarrow.parquet.ParquetWriter (pyarrow is imported when needed)

    def write(self, table: dict) -> None:
        """Append one chunk: a dict of attribute columns plus ``wkb`` (see :func:`_frame`)."""
        spec = self.spec
        if spec.key == "parquet":
            self._write_parquet(_geoframe(table, spec.crs_wkt))
        else:
            # a GeoPackage (the output, or FlatGeobuf's/GeoJSON's staging file): the staged WKB goes to
            # GDAL as it is (no geometry objects, no GeoDataFrame); the call pyogrio.write_dataframe makes
            import pyogrio.raw

            kwargs: dict[str, Any] = {"layer": spec.layer}
            if not self._started:
                kwargs["dataset_options"] = GPKG_DATASET_OPTIONS
            pyogrio.raw.write(spec.staged_path, table["wkb"], [table[c] for c in COLUMNS], list(COLUMNS),
                              driver="GPKG", geometry_type="MultiPolygon", crs=spec.crs_ogr,
                              append=self._started, **kwargs)
        self._started = True
        self.count += len(table["id"])

    def _write_parquet(self, gdf) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(gdf.to_arrow(index=False, geometry_encoding="WKB"))
        if self._parquet is None:
            geo = _geoparquet_metadata(self.spec.crs_wkt)
            meta = dict(table.schema.metadata or {})
            meta[b"geo"] = json.dumps(geo).encode()
            self._schema = table.schema.with_metadata(meta)
            self._parquet = pq.ParquetWriter(self.spec.path, self._schema)
        self._parquet.write_table(table.cast(self._schema))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


def _geoparquet_metadata(crs_wkt: str) -> dict:
    from pyproj import CRS as PCRS

    return {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["MultiPolygon"],
                                 "crs": PCRS.from_wkt(crs_wkt).to_json_dict()}},
    }


def _frame(chunks: list[dict], names: dict[int, str]) -> dict:
    """One output chunk: the attribute columns (numpy) and the geometries as WKB (object array)."""
    ids = np.concatenate([c["id"] for c in chunks])
    values = np.concatenate([c["value"] for c in chunks])
    area = np.concatenate([c["area_m2"] for c in chunks])
    perimeter = np.concatenate([c["perimeter_m"] for c in chunks])
    uniq, inverse = np.unique(values, return_inverse=True)
    class_name = np.array([names[int(v)] for v in uniq], dtype=object)[inverse.ravel()]
    return {
        "id": ids.astype(np.int64),
        "class": values.astype(np.int64),
        "class_name": class_name,
        "area_m2": np.round(area, 3),
        "area_ha": np.round(area / 1e4, 6),
        "perimeter_m": np.round(perimeter, 3),
        "wkb": np.concatenate([np.asarray(c["wkb"], dtype=object) for c in chunks]),
    }


def _geoframe(table: dict, crs_wkt: str):
    import geopandas as gpd
    import shapely

    return gpd.GeoDataFrame({c: table[c] for c in COLUMNS},
                            geometry=gpd.GeoSeries(shapely.from_wkb(table["wkb"]), crs=crs_wkt))


def _staged_chunks(paths: Iterable[str]) -> Iterator[dict]:
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            yield {"id": z["id"], "value": z["value"], "wkb": unpacked(z, "wkb"), "area_m2": z["area_m2"],
                   "perimeter_m": z["perimeter_m"]}
