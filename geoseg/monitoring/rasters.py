"""GeoTIFFs on an AOI grid (observations, ``state.tif``, ``alerts_gfw.tif``), written block by block to a
temporary file and published atomically (:class:`TifBlocks`; :func:`write_tif` for a whole array).

The options are monitoring's own (tiled 256 px, DEFLATE; the COG with nearest overviews and no predictor,
through :func:`geoseg.io.output.to_cog`), not a prediction product's, so the files stay byte-identical to
earlier releases: blocks are written first, then the band descriptions and tags, as a whole-array write did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._util.atomic import publish, remove_quietly, temp_path
from geoseg.errors import GeosegError, OutputError
from geoseg.io.grid import Window
from geoseg.io.output import to_cog
from geoseg.io.warp import Grid

__all__ = ["TifBlocks", "write_tif"]


class TifBlocks:
    """A tiled GeoTIFF of ``count`` bands on ``grid`` at a temporary name beside ``path``: :meth:`write` blocks
    (any order, each pixel once), then :meth:`publish` (descriptions and tags set, closed, converted to a COG
    with ``cog``, fsynced, renamed onto ``path``) or :meth:`discard`.  Use it in a ``with``: leaving it by an
    exception discards it.  A killed process leaves only hidden temporaries (``.<name>.*.tmp.*``), which the
    next run removes under the AOI lock."""

    def __init__(self, path: Path, grid: Grid, count: int, dtype: str, nodata: float | None = None,
                 descriptions: Sequence[str] = (), tags: dict | None = None, cog: bool = False) -> None:
        import rasterio
        from rasterio.crs import CRS

        self.path, self.dtype, self.cog = Path(path), dtype, cog
        self.descriptions, self.tags = tuple(descriptions), dict(tags or {})
        self.tmp = temp_path(self.path)  # the tiled GeoTIFF (for a COG: the part it is converted from)
        profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": count, "dtype": dtype,
                   "crs": CRS.from_wkt(grid.crs_wkt), "transform": grid.affine, "compress": "deflate",
                   "tiled": True, "blockxsize": 256, "blockysize": 256}
        if nodata is not None:
            profile["nodata"] = nodata
        try:
            self._dst: Any = rasterio.open(self.tmp, "w", **profile)
        except OSError as e:
            raise OutputError(f"cannot write {self.path} ({e}); check the folder is writable") from None

    def __enter__(self) -> TifBlocks:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.discard()

    def write(self, window: Window, arrays: np.ndarray) -> None:
        """Write (bands, h, w) ``arrays`` at ``window``."""
        from rasterio.windows import Window as RioWindow

        self._dst.write(arrays.astype(self.dtype),
                        window=RioWindow(window.col_off, window.row_off, window.width, window.height))

    def _close(self) -> None:
        if self._dst is not None and not self._dst.closed:
            for i, d in enumerate(self.descriptions, start=1):
                self._dst.set_band_description(i, d)
            if self.tags:
                self._dst.update_tags(**self.tags)
            self._dst.close()

    def publish(self) -> None:
        """Finish the file and rename it onto ``path`` (fsync the file, then the folder)."""
        cog = None
        try:
            self._close()
            if self.cog:
                cog = temp_path(self.path)
                to_cog(self.tmp, cog, "NEAREST")
                publish(cog, self.path)
            else:
                publish(self.tmp, self.path)
        except GeosegError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write {self.path} ({e.strerror or e}); check the folder is writable") from None
        finally:
            self.discard(cog)

    def discard(self, *more: Path | None) -> None:
        """Close and remove the temporaries (nothing at ``path`` changes)."""
        if self._dst is not None and not self._dst.closed:
            self._dst.close()
        for p in (self.tmp, *(m for m in more if m is not None)):
            remove_quietly(p, f"{p}.aux.xml")


def write_tif(path: Path, arrays: np.ndarray, grid: Grid, dtype: str, nodata: float | None = None,
              descriptions: Sequence[str] = (), tags: dict | None = None, cog: bool = False) -> None:
    """Write (bands,h,w) ``arrays`` on ``grid`` to ``path`` through a temporary file (fsync, rename);
    ``cog``: a tiled GeoTIFF first, converted by GDAL's COG driver into the temporary that is renamed."""
    with TifBlocks(path, grid, arrays.shape[0], dtype, nodata, descriptions, tags, cog) as out:
        out.write(Window(0, 0, grid.height, grid.width), arrays)
        out.publish()
