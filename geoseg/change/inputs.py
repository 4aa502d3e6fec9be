"""The inputs of ``detect_change``, checked before any work: both dates and the masks (existence,
georeferencing, bands, data type, forest classes or probability band, grids), as one :class:`ChangeInputs`
that makes the window tasks' :class:`~geoseg.change.tasks.ChangeSpec`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.change.classify import ForestRule, probability_scale, resolve_forest_values
from geoseg.change.tasks import ChangeSpec, Layer
from geoseg.errors import GridMismatchError, InputError, InputFileError, NotGeoreferencedError
from geoseg.io.area import pixel_area_m2
from geoseg.io.raster import SceneInfo, grid_differences

__all__ = ["ChangeInputs", "plan_inputs", "inspect_input", "layer_of"]

MASK_ROLES = ("--before-mask", "--after-mask")


def inspect_input(path: str | os.PathLike, role: str) -> tuple[SceneInfo, dict[int, str], tuple[float, ...]]:
    """(SceneInfo, class names from CLASS_<v> tags, band scales) of an input raster."""
    import rasterio

    from geoseg.io.raster import class_names_from_tags, open_scene

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"{role} raster {path} does not exist; check the path")
    info = open_scene(path, allow_ungeoreferenced=True)
    if not info.georeferenced:
        what = "CRS" if info.crs_wkt is None else "geotransform"
        raise NotGeoreferencedError(
            f"{role} raster {path} has no {what}; change areas and polygons need one: georeference it "
            "(e.g. gdal_edit.py -a_srs EPSG:<code> -a_ullr <ulx> <uly> <lrx> <lry>)"
        )
    with rasterio.open(path) as src:
        names = class_names_from_tags(src.tags(), src.tags(1))
        scales = tuple(float(s) if s else 1.0 for s in src.scales)
    return info, names, scales


def layer_of(info: SceneInfo, band: int, warp: bool = False, resampling: str = "nearest") -> Layer:
    return Layer(path=os.path.abspath(info.path), band=band, width=info.width, height=info.height,
                 crs_wkt=info.crs_wkt, transform=info.transform, nodata=info.nodata,
                 masked=info.per_dataset_mask, dtype=info.dtype, warp=warp, resampling=resampling)


def _check_date(info: SceneInfo, role: str, probability: bool) -> None:
    """A class raster has one integer band; a probability raster may have one band per class."""
    if info.count != 1 and not probability:
        raise InputError(
            f"{role} raster {info.path} has {info.count} bands; give a single-band class raster (e.g. the "
            "landcover.tif of geoseg predict), or pass --probability for probabilities.tif"
        )
    if not probability and not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise InputError(
            f"{role} raster {info.path} holds {info.dtype} values, not class codes; pass --probability for "
            "forest-probability rasters, or give land-cover class rasters"
        )


def _probability_band(info: SceneInfo, items: Sequence[str | int], role: str) -> int:
    if info.count == 1:
        return 1
    names = [str(i) for i in items if isinstance(i, str)]
    descs = [(d or "").strip().casefold() for d in info.descriptions]
    if len(items) == 1 and names and names[0].casefold() in descs:
        return descs.index(names[0].casefold()) + 1
    have = ", ".join(d or "?" for d in info.descriptions)
    raise InputError(
        f"{role} raster {info.path} has {info.count} bands ({have}) and none is named by --forest "
        f"{','.join(map(str, items))}; name the forest band with --forest (e.g. --forest trees), "
        "or give a single-band probability raster"
    )


def _on_grid(ref: SceneInfo, others: Sequence[tuple[str, SceneInfo, int, str]], align: bool) -> dict[str, Layer]:
    """Layers of the rasters read on ``ref``'s grid (``(role, info, band, resampling)``): warped where their
    grid differs with ``align``, else such a difference is a GridMismatchError."""
    layers: dict[str, Layer] = {}
    for role, info, band, rs in others:
        diffs = grid_differences(ref, info)
        if diffs and not align:
            raise GridMismatchError(
                f"{role} {info.path} is not on BEFORE's grid ({'; '.join(diffs)}); pass --align to resample it "
                f"onto BEFORE's grid ({rs}), or give rasters on one grid"
            )
        layers[role] = layer_of(info, band, warp=bool(diffs), resampling=rs)
    return layers


@dataclass(frozen=True)
class ChangeInputs:
    """The checked inputs of one change run: both dates, the masks and the forest definition of each date."""

    mode: str  # "classes" or "probability"
    items: tuple[str | int, ...]  # --forest
    before: SceneInfo
    after: SceneInfo
    layers: dict[str, Layer]  # "BEFORE", "AFTER", and "--before-mask"/"--after-mask" where given
    before_forest: tuple[int, ...]  # classes: forest class values per date
    after_forest: tuple[int, ...]
    threshold: float  # probability: forest at or above this percent
    before_scale: float  # probability: values -> 0..1
    after_scale: float
    aligned: bool  # some raster was warped onto BEFORE's grid
    pixel_area_m2: float

    @property
    def probability(self) -> bool:
        return self.mode == "probability"

    @property
    def crs_wkt(self) -> str:
        assert self.before.crs_wkt is not None  # inspect_input refused it
        return self.before.crs_wkt

    def mask_path(self, role: str) -> str | None:
        return self.layers[role].path if role in self.layers else None

    def spec(self, part: str) -> ChangeSpec:
        """The window tasks' spec, streaming into the temporary GeoTIFF ``part``."""
        b = self.before
        return ChangeSpec(
            mode=self.mode, before=self.layers["BEFORE"], after=self.layers["AFTER"],
            before_mask=self.layers.get("--before-mask"), after_mask=self.layers.get("--after-mask"),
            before_forest=self.before_forest, after_forest=self.after_forest, threshold=self.threshold,
            before_scale=self.before_scale, after_scale=self.after_scale,
            crs_wkt=b.crs_wkt, transform=b.transform, width=b.width, height=b.height, part=part,
        )

    def forest_rules(self) -> tuple[ForestRule, ForestRule]:
        """What is forest in BEFORE and in AFTER (for drawing them as the change saw them)."""
        if self.probability:
            return (ForestRule(threshold=self.threshold, scale=self.before_scale),
                    ForestRule(threshold=self.threshold, scale=self.after_scale))
        return ForestRule(self.before_forest), ForestRule(self.after_forest)

    def forest_description(self) -> str:
        """The ``GEOSEG_FOREST`` tag of the change raster."""
        if self.probability:
            return f">= {self.threshold:g}% forest probability"
        return (f"classes {','.join(map(str, self.before_forest))} (before), "
                f"{','.join(map(str, self.after_forest))} (after)")


def plan_inputs(before: str | os.PathLike, after: str | os.PathLike, masks: Sequence[str | os.PathLike | None],
                *, items: Sequence[str | int], probability: bool, threshold: float, align: bool) -> ChangeInputs:
    """Inspect and check every input (before any output is touched); see :class:`ChangeInputs`."""
    b_info, b_names, b_scales = inspect_input(before, "BEFORE")
    a_info, a_names, a_scales = inspect_input(after, "AFTER")
    mask_infos = [inspect_input(path, role)[0] if path is not None else None for role, path in zip(MASK_ROLES, masks)]
    for info, role in ((b_info, "BEFORE"), (a_info, "AFTER")):
        _check_date(info, role, probability)
    b_band = a_band = 1
    before_forest: tuple[int, ...] = ()
    after_forest: tuple[int, ...] = ()
    if probability:
        b_band = _probability_band(b_info, items, "BEFORE")
        a_band = _probability_band(a_info, items, "AFTER")
    else:
        before_forest = resolve_forest_values(items, b_names, b_info.path)
        after_forest = resolve_forest_values(items, a_names, a_info.path)
    for m, role in zip(mask_infos, MASK_ROLES):
        if m is not None and m.count != 1:
            raise InputError(f"{role} {m.path} has {m.count} bands; give a single-band mask (nonzero = valid)")
    others = [("AFTER", a_info, a_band, "bilinear" if probability else "nearest")] + [
        (role, m, 1, "nearest") for m, role in zip(mask_infos, MASK_ROLES) if m is not None]
    layers = {"BEFORE": layer_of(b_info, b_band), **_on_grid(b_info, others, align)}
    pix_m2 = pixel_area_m2(b_info.crs_wkt, b_info.transform, b_info.width, b_info.height)
    if pix_m2 is None:
        raise InputError(f"BEFORE raster {b_info.path} has a CRS that is neither projected nor geographic; "
                         "change areas need one: reproject it (e.g. gdalwarp -t_srs EPSG:<code>)")
    return ChangeInputs(
        mode="probability" if probability else "classes", items=tuple(items), before=b_info, after=a_info,
        layers=layers, before_forest=before_forest, after_forest=after_forest, threshold=threshold,
        before_scale=probability_scale(b_info.dtype, b_scales[b_band - 1]),
        after_scale=probability_scale(a_info.dtype, a_scales[a_band - 1]),
        aligned=any(layer.warp for layer in layers.values()), pixel_area_m2=pix_m2,
    )
