"""The one band alias table: every name a product, a STAC Item or a user gives a band, mapped to one
canonical name.

Canonical names are the Sentinel-2 band names without the leading zero (``B2``, ``B8A``, ``B11``), which
is what the model cards and the shipped samples call them.  A Landsat 8/9 band maps to the Sentinel-2
band of the same STAC common name (``SR_B2`` -> ``blue`` -> ``B2``; ``SR_B5`` is ``nir08`` -> ``B8A``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    """One canonical band: its name, STAC common name, Sentinel-2 centre wavelength (µm), native
    resolution (m) and the aliases that name it."""

    name: str
    common_name: str | None
    wavelength: float
    resolution: int
    aliases: tuple[str, ...] = ()


#: Sentinel-2 MSI bands in product order (band_id 0..12 in the SAFE metadata).
SENTINEL2_BANDS: tuple[Band, ...] = (
    Band("B1", "coastal", 0.443, 60, ("B01", "coastal_aerosol", "SR_B1", "B1_60m")),
    Band("B2", "blue", 0.490, 10, ("B02", "SR_B2")),
    Band("B3", "green", 0.560, 10, ("B03", "SR_B3")),
    Band("B4", "red", 0.665, 10, ("B04", "SR_B4")),
    Band("B5", "rededge", 0.705, 20, ("B05", "rededge1", "rededge071")),
    Band("B6", "rededge", 0.740, 20, ("B06", "rededge2", "rededge075")),
    Band("B7", "rededge", 0.783, 20, ("B07", "rededge3", "rededge078")),
    Band("B8", "nir", 0.842, 10, ("B08",)),
    Band("B8A", "nir08", 0.865, 20, ("B08A", "nir08", "nir_narrow", "SR_B5")),
    Band("B9", "nir09", 0.945, 60, ("B09", "nir09", "water_vapour", "water_vapor")),
    Band("B10", "cirrus", 1.375, 60, ("cirrus",)),
    Band("B11", "swir16", 1.610, 20, ("swir16", "swir1", "SR_B6")),
    Band("B12", "swir22", 2.190, 20, ("swir22", "swir2", "SR_B7")),
)

#: Landsat 8/9 Collection 2 Level-2 surface-reflectance bands (file suffix) -> canonical name.
LANDSAT_SR_BANDS: dict[str, str] = {
    "SR_B1": "B1", "SR_B2": "B2", "SR_B3": "B3", "SR_B4": "B4", "SR_B5": "B8A", "SR_B6": "B11", "SR_B7": "B12",
}

# common names that name exactly one band ("rededge" and "nir" alone are ambiguous on Sentinel-2 except nir)
_UNIQUE_COMMON = {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B8", "nir08": "B8A",
                  "nir09": "B9", "cirrus": "B10", "swir16": "B11", "swir22": "B12"}


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip()).upper()


_ALIASES: dict[str, str] = {}
for _band in SENTINEL2_BANDS:
    for _alias in (_band.name, *_band.aliases):
        _ALIASES[_key(_alias)] = _band.name
for _common, _name in _UNIQUE_COMMON.items():
    _ALIASES[_key(_common)] = _name
for _alias, _name in LANDSAT_SR_BANDS.items():
    _ALIASES[_key(_alias)] = _name

BY_NAME: dict[str, Band] = {b.name: b for b in SENTINEL2_BANDS}
#: canonical name -> position in SENTINEL2_BANDS (the SAFE metadata's band_id)
BAND_ID: dict[str, int] = {b.name: i for i, b in enumerate(SENTINEL2_BANDS)}


def canonical_band(name: str | None) -> str | None:
    """The canonical name of band ``name`` (any alias, case and ``-``/space insensitive), or None when
    the table does not know it.  ``canonical_band("B02") == canonical_band("blue") == "B2"``."""
    if not name:
        return None
    return _ALIASES.get(_key(name))


def band_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """Canonical names sorted in Sentinel-2 product order (unknown names last, as given)."""
    return sorted(names, key=lambda n: BAND_ID.get(n, len(BAND_ID)))
