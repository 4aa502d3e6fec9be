"""SceneSource: what every product reader returns (the contract with the radiometry side)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from geoseg.errors import MissingBandError
from geoseg.io.clouds import CloudMask
from geoseg.io.sources.bands import band_order, canonical_band

SENSORS = ("sentinel-2", "landsat-8", "landsat-9")
LEVELS = ("L1C", "L2A", "L2")
QUANTITIES = ("toa_reflectance", "surface_reflectance")


@dataclass(frozen=True)
class SceneSource:
    """A product read as one stacked raster.

    ``dataset`` is what ``rasterio.open`` takes (a VRT XML string here); ``band_names`` the canonical
    name of each of its bands in order; each band carries GDAL scale/offset mapping its DN to the
    physical ``quantity`` (reflectance 0..1) and the dataset carries the tags ``GEOSEG_SENSOR``,
    ``GEOSEG_LEVEL``, ``GEOSEG_QUANTITY`` and ``SENSING_TIME``.  ``cloud_mask`` is the product's own
    cloud mask on the same grid (geoseg.io.clouds), or None when the product carries none.
    """

    dataset: str
    origin: str
    band_names: tuple[str, ...]
    sensor: str | None = None
    level: str | None = None
    quantity: str | None = None
    acquired: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    cloud_mask: CloudMask | None = None

    def write_vrt(self, path: str) -> str:
        """Write ``dataset`` (a VRT XML string) to ``path`` (a ``.vrt``) and return the path."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.dataset)
        return path


def dataset_tags(sensor: str | None, level: str | None, quantity: str | None, acquired: str | None,
                 metadata: dict[str, str]) -> dict[str, str]:
    """The VRT dataset tags of a source: the GEOSEG_* contract tags, SENSING_TIME and the metadata."""
    tags = {k: v for k, v in (("GEOSEG_SENSOR", sensor), ("GEOSEG_LEVEL", level),
                              ("GEOSEG_QUANTITY", quantity), ("SENSING_TIME", acquired)) if v}
    tags.update({k.upper(): v for k, v in metadata.items()})
    return tags


def select_bands(available: Sequence[str], wanted: Sequence[str] | None, origin: str, what: str) -> list[str]:
    """The canonical names to stack: ``wanted`` (any aliases) in its order, or every ``available`` band in
    Sentinel-2 order.  A wanted band that is not available is a MissingBandError naming it."""
    if wanted is None:
        return band_order(list(available))
    chosen = []
    for name in wanted:
        canon = canonical_band(name)
        if canon is None:
            raise MissingBandError(f"{origin}: unknown band name {name!r}; use a Sentinel-2 name (B2, B8A...), "
                                   "a STAC common name (blue, nir08...) or a Landsat SR_B* name")
        if canon not in available:
            have = ", ".join(band_order(list(available))) or "none"
            raise MissingBandError(f"{origin}: {what} has no band {canon} (it has {have}); "
                                   "use a complete product, or a model that needs only bands it has")
        chosen.append(canon)
    return chosen
