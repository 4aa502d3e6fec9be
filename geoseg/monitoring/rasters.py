"""GeoTIFFs on an AOI grid (observations, ``state.tif``, ``alerts_gfw.tif``), written atomically.

The options are monitoring's own (tiled 256 px, DEFLATE; the COG with nearest overviews and no predictor,
through :func:`geoseg.io.output.to_cog`), not a prediction product's, so the files stay byte-identical to
earlier releases.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg._util.atomic import atomic_path, remove_quietly, temp_path
from geoseg.io.output import to_cog
from geoseg.io.warp import Grid

__all__ = ["write_tif"]


def _write_gtiff(path: Path, arrays: np.ndarray, grid: Grid, dtype: str, nodata: float | None,
                 descriptions: Sequence[str], tags: dict | None) -> None:
    import rasterio
    from rasterio.crs import CRS

    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": arrays.shape[0],
               "dtype": dtype, "crs": CRS.from_wkt(grid.crs_wkt), "transform": grid.affine, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arrays.astype(dtype))
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)


def write_tif(path: Path, arrays: np.ndarray, grid: Grid, dtype: str, nodata: float | None = None,
              descriptions: Sequence[str] = (), tags: dict | None = None, cog: bool = False) -> None:
    """Write (bands,h,w) ``arrays`` on ``grid`` to ``path`` through a temporary file (fsync, rename);
    ``cog``: a tiled GeoTIFF first, converted by GDAL's COG driver into the temporary that is renamed."""

    with atomic_path(path) as tmp:
        if not cog:
            _write_gtiff(tmp, arrays, grid, dtype, nodata, descriptions, tags)
        else:
            part = temp_path(path)  # ".<name>.<id>.tmp.tif": swept like the others after a kill
            try:
                _write_gtiff(part, arrays, grid, dtype, nodata, descriptions, tags)
                to_cog(part, tmp, "NEAREST")
            finally:
                remove_quietly(part, f"{part}.aux.xml")
