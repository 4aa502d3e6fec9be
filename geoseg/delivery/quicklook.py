"""``quicklook.png``: a small styled picture of a class raster, with legend, scale bar and north/CRS note.

The map is read *decimated*: ``rasterio`` asks GDAL for an ``out_shape`` no larger than the picture, so
GDAL serves it from the COG's overviews (MODE-resampled class codes) and memory stays bounded whatever the
raster's size; the full-resolution array is never read for a raster that has overviews.  Area shares in the
legend come from ``class_pixels`` when given (exact counts from ``run.json``), else from the decimated map
(approximate; said so in the legend title).  matplotlib with the Agg backend; no display needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geoseg._util.atomic import atomic_path
from geoseg.errors import InputError, InputFileError
from geoseg.io.codes import ClassInfo

__all__ = ["write_quicklook", "write_change_quicklook", "read_decimated", "classes_from_raster"]

NODATA = 255


def classes_from_raster(src) -> list[ClassInfo]:
    """Class values, names and colours from geoseg's ``CLASS_<v>`` tags and the colour table."""
    from geoseg.io.raster import class_names_from_tags

    names = class_names_from_tags(src.tags(), src.tags(1))
    try:
        cmap = src.colormap(1)
    except ValueError:
        cmap = {}
    if not names:
        raise InputError(f"{src.name} has no CLASS_<value> tags; pass the classes explicitly")
    out = []
    for v, n in sorted(names.items()):
        r, g, b = cmap.get(v, (128, 128, 128, 255))[:3]
        out.append(ClassInfo(v, n, f"#{r:02X}{g:02X}{b:02X}"))
    return out


def read_decimated(path: str | os.PathLike, max_w: int, max_h: int, band: int = 1
                   ) -> tuple[np.ndarray, float, int | None]:
    """Band ``band`` (default 1) at most ``max_w`` x ``max_h``, read from the coarsest overview that is still at
    least that big.

    Returns ``(array, factor, overview_level)``: ``factor`` is full-resolution pixels per returned pixel,
    ``overview_level`` the overview read (``None``: the full-resolution band, when no overview is large
    enough or the raster has none; then GDAL decimates while reading, still without a full-size array).
    """
    with rasterio.open(path) as src:
        f = max(1.0, src.width / max_w, src.height / max_h)
        w, h = max(1, int(round(src.width / f))), max(1, int(round(src.height / f)))
        level = None
        for i, ovf in enumerate(src.overviews(band)):
            if src.width / ovf >= w and src.height / ovf >= h:
                level = i
        full_w = src.width
    with rasterio.open(path, overview_level=level) if level is not None else rasterio.open(path) as src:
        data = src.read(band, out_shape=(h, w), resampling=Resampling.nearest)
    return data, full_w / w, level


def _nice_length(target_m: float) -> float:
    exp = 10 ** math.floor(math.log10(target_m))
    for m in (5, 2, 1):
        if m * exp <= target_m:
            return m * exp
    return exp


def _metres_per_unit(src) -> tuple[float, str]:
    """Ground metres per CRS unit along x at the raster centre, and a CRS note."""
    crs = src.crs
    if crs is None:
        return float("nan"), "no CRS (pixel grid)"
    label = f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else (crs.to_string()[:40] or "custom CRS")
    if crs.is_projected:
        return float(crs.linear_units_factor[1]), f"{label} · grid north up"
    if crs.is_geographic:
        lat = (src.bounds.bottom + src.bounds.top) / 2
        return 111_320.0 * math.cos(math.radians(lat)), f"{label} · north up"
    return float("nan"), label


def _scale_bar(ax, shape: tuple[int, int], px_m: float) -> None:
    """A two-segment scale bar at the lower left of ``ax`` (on a white box); none without a pixel size."""
    from matplotlib.patches import Rectangle

    h, w = shape
    if not (math.isfinite(px_m) and px_m > 0):
        return
    length_m = _nice_length(w * px_m / 4)
    bar_px = length_m / px_m
    x0, y0 = w * 0.04, h * 0.95
    ax.add_patch(Rectangle((x0 - w * 0.015, y0 - h * 0.075), bar_px + w * 0.03, h * 0.1,
                           facecolor="white", alpha=0.8, edgecolor="none"))
    ax.add_patch(Rectangle((x0, y0 - h * 0.012), bar_px / 2, h * 0.012, facecolor="black"))
    ax.add_patch(Rectangle((x0 + bar_px / 2, y0 - h * 0.012), bar_px / 2, h * 0.012,
                           facecolor="white", edgecolor="black", linewidth=0.6))
    label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    ax.text(x0 + bar_px / 2, y0 - h * 0.025, label, ha="center", va="bottom", fontsize=9)


def _display_aspect(src) -> float:
    """Ground height / ground width of a pixel (cos(latitude) correction on geographic grids)."""
    aspect = abs(src.transform.e) / abs(src.transform.a)
    if src.crs is not None and src.crs.is_geographic:
        lat = (src.bounds.bottom + src.bounds.top) / 2
        aspect /= max(math.cos(math.radians(lat)), 1e-6)
    return aspect


def _save(fig, out: Path, dpi: int) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", facecolor="white")


def _class_counts(classes: Sequence[ClassInfo], class_pixels: Mapping[str, int] | None,
                  data: np.ndarray) -> dict[int, int]:
    """Pixels per class value: exact counts by class name when given, else counted on ``data``
    (an overview: approximate)."""
    if class_pixels is not None:
        return {c.value: int(class_pixels.get(c.name, 0)) for c in classes}
    return {c.value: int(np.count_nonzero(data == c.value)) for c in classes}


def _rgb(c: ClassInfo) -> tuple[float, float, float]:
    r, g, b = c.rgb
    return (r / 255, g / 255, b / 255)


def _class_colours(classes: Sequence[ClassInfo]) -> list[tuple[float, float, float, float]]:
    """The colours of a :func:`_class_index` image: transparent for 0, then one per class."""
    return [(1, 1, 1, 0)] + [(*_rgb(c), 1.0) for c in classes]


def _class_index(data: np.ndarray, classes: Sequence[ClassInfo], nodata: int) -> np.ndarray:
    """Palette image of a class array: 0 = nodata (transparent/white), then one index per class."""
    lut = np.zeros(256, dtype=np.uint8)
    for i, c in enumerate(classes, start=1):
        lut[c.value] = i
    idx = lut[data]
    idx[data == nodata] = 0
    return idx


def write_quicklook(raster_path: str | os.PathLike, out_path: str | os.PathLike | None = None,
                    classes: Sequence[ClassInfo] | None = None, *, width: int = 1200, height: int = 800,
                    class_pixels: Mapping[str, int] | None = None, title: str | None = None) -> str:
    """Render ``raster_path`` to a ``width`` x ``height`` PNG (default ``quicklook.png`` beside it).

    ``classes`` default to the raster's ``CLASS_<v>`` tags and colour table; ``class_pixels`` (class name
    -> pixel count, as in ``run.json``) gives exact area shares.  Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import FancyArrow, Patch

    path = Path(raster_path)
    if not path.is_file():
        raise InputFileError(f"{path} does not exist; give the class raster written by geoseg predict")
    out = Path(out_path) if out_path is not None else path.with_name("quicklook.png")
    if width < 200 or height < 150:
        raise InputError(f"quicklook size {width}x{height} is too small; use at least 200x150 pixels")
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        with rasterio.open(path) as src:
            cls = sorted(classes if classes is not None else classes_from_raster(src), key=lambda c: c.value)
            data, factor, _ = read_decimated(path, int(width * 0.66), int(height * 0.84))
            m_per_unit, crs_note = _metres_per_unit(src)
            px_m = abs(src.transform.a) * factor * m_per_unit  # ground metres per displayed pixel
            nodata = int(src.nodata) if src.nodata is not None else NODATA
            # display aspect: ground height / ground width of a pixel (1 on square projected pixels; on a
            # geographic grid a degree of longitude is cos(lat) of a degree of latitude)
            aspect = _display_aspect(src)
            full_shape = (src.width, src.height)

        idx = _class_index(data, cls, nodata)
        cmap = ListedColormap(_class_colours(cls))

        ax = fig.add_axes((0.02, 0.08, 0.66, 0.84))
        ax.imshow(idx, cmap=cmap, vmin=0, vmax=len(cls), interpolation="nearest", aspect=aspect)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title or f"{path.name}  ({full_shape[0]} x {full_shape[1]} px)", fontsize=11)

        _scale_bar(ax, data.shape, px_m)
        # north arrow and CRS note beside the map, below the legend (never over the data)
        na = fig.add_axes((0.70, 0.06, 0.05, 0.16))
        na.set_axis_off()
        na.add_patch(FancyArrow(0.5, 0.05, 0, 0.6, width=0.12, head_width=0.45, head_length=0.2,
                                length_includes_head=True, color="black", transform=na.transAxes))
        na.text(0.5, 0.88, "N", ha="center", va="center", fontsize=12, fontweight="bold", transform=na.transAxes)
        fig.text(0.76, 0.12, crs_note, fontsize=9, color="#333333", va="center", wrap=True)

        # legend with area shares
        counts = _class_counts(cls, class_pixels, data)
        share_note = "area share" if class_pixels is not None else "area share\n(approx., from overview)"
        total = sum(counts.values()) or 1
        handles = [Patch(facecolor=_rgb(c), edgecolor="#555555",
                         label=f"{c.name}  {100 * counts[c.value] / total:.1f} %") for c in cls]
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.70, 0.92), frameon=False,
                   fontsize=10, title=share_note, title_fontsize=9, alignment="left")

        _save(fig, out, dpi)
    finally:
        plt.close(fig)
    return str(out)


#: forest / non-forest colours of the before/after panels of a change quicklook
FOREST_COLOUR, NONFOREST_COLOUR = "#397D49", "#E3D9B5"


def _forest_panel(path: Path, band: int, is_forest, max_w: int, max_h: int):
    """Decimated read of a BEFORE/AFTER raster -> index image (0 no data, 1 non-forest, 2 forest), aspect."""
    data, factor, _ = read_decimated(path, max_w, max_h, band=band)
    with rasterio.open(path) as src:
        nodata = src.nodata
        aspect = _display_aspect(src)
        shape = (src.width, src.height)
    valid = np.ones(data.shape, bool)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= data != nodata
    forest = np.asarray(is_forest(data), dtype=bool) & valid
    idx = np.where(valid, np.where(forest, 2, 1), 0).astype(np.uint8)
    return idx, aspect, shape


#: (title, index image, colours, display aspect, ground metres per displayed pixel or None: no scale bar)
_Panel = tuple[str, np.ndarray, list[tuple[float, float, float, float]], float, float | None]


def write_change_quicklook(change_path: str | os.PathLike, before_path: str | os.PathLike,
                           after_path: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                           before_forest, after_forest, before_band: int = 1, after_band: int = 1,
                           change_classes: Sequence[ClassInfo] | None = None,
                           class_pixels: Mapping[str, int] | None = None, pixel_area_m2: float | None = None,
                           width: int = 1800, height: int = 760, title: str | None = None) -> str:
    """BEFORE / AFTER / change side by side in one PNG (default ``change_quicklook.png`` beside the change raster).

    BEFORE and AFTER are drawn as forest (green) / non-forest (sand) / no data (white): ``before_forest`` and
    ``after_forest`` map a decimated array of the raster's values to a boolean forest mask (class values
    or a probability threshold; the same definition the change used).  The change raster is drawn with its
    classes (default: its ``CLASS_<v>`` tags and colour table); unobserved (255) is white.  Every panel is
    read decimated from the overviews (:func:`read_decimated`), so memory does not grow with the rasters.
    Legends give area shares: of the change classes exactly from ``class_pixels`` (name -> pixels, e.g.
    ``change.json``'s) with hectares when ``pixel_area_m2`` is given, else approximate from the overview.
    Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    change, before, after = Path(change_path), Path(before_path), Path(after_path)
    for p in (change, before, after):
        if not p.is_file():
            raise InputFileError(f"{p} does not exist; give the change raster and the two rasters it compared")
    out = Path(out_path) if out_path is not None else change.with_name("change_quicklook.png")
    if width < 450 or height < 200:
        raise InputError(f"change quicklook size {width}x{height} is too small; use at least 450x200 pixels")
    dpi = 100
    pw, ph = int(width * 0.31), int(height * 0.66)
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        with rasterio.open(change) as src:
            cls = sorted(change_classes if change_classes is not None else classes_from_raster(src),
                         key=lambda c: c.value)
            m_per_unit, crs_note = _metres_per_unit(src)
            c_aspect = _display_aspect(src)
            nodata = int(src.nodata) if src.nodata is not None else NODATA
            c_shape = (src.width, src.height)
            res_x = abs(src.transform.a)
        cdata, factor, _ = read_decimated(change, pw, ph)
        cidx = _class_index(cdata, cls, nodata)
        fn_colours = [(1, 1, 1, 0), _rgb01(NONFOREST_COLOUR), _rgb01(FOREST_COLOUR)]
        panels: list[_Panel] = []
        for role, path, band, fn in (("before", before, before_band, before_forest),
                                     ("after", after, after_band, after_forest)):
            idx, aspect, shape = _forest_panel(path, band, fn, pw, ph)
            panels.append((f"{role}: {path.name}  ({shape[0]} x {shape[1]} px)", idx, fn_colours, aspect, None))
        panels.append((title or f"change: {change.name}  ({c_shape[0]} x {c_shape[1]} px)", cidx,
                       _class_colours(cls), c_aspect, res_x * factor * m_per_unit))
        for k, panel in enumerate(panels):
            _draw_panel(fig, k, panel)
        _change_legend(fig, cls, _class_counts(cls, class_pixels, cdata), class_pixels is not None, pixel_area_m2)
        fig.text(0.99, 0.02, crs_note, fontsize=9, color="#333333", ha="right", va="bottom")
        _save(fig, out, dpi)
    finally:
        plt.close(fig)
    return str(out)


def _draw_panel(fig, k: int, panel: _Panel) -> None:
    """Panel ``k`` (0 before, 1 after, 2 change) of a change quicklook; the two forest panels get a legend
    with approximate shares of their observed pixels."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ttl, idx, colours, aspect, px_m = panel
    ax = fig.add_axes((0.01 + k * 0.33, 0.30, 0.31, 0.62))
    ax.imshow(idx, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1, interpolation="nearest",
              aspect=aspect)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(ttl, fontsize=10)
    if px_m is not None:
        _scale_bar(ax, idx.shape, px_m)
    if k < 2:
        n_obs = int(np.count_nonzero(idx)) or 1
        handles = [Patch(facecolor=_rgb01(FOREST_COLOUR), edgecolor="#555555",
                         label=f"forest  {100 * np.count_nonzero(idx == 2) / n_obs:.1f} %"),
                   Patch(facecolor=_rgb01(NONFOREST_COLOUR), edgecolor="#555555",
                         label=f"non-forest  {100 * np.count_nonzero(idx == 1) / n_obs:.1f} %"),
                   Patch(facecolor="white", edgecolor="#555555", label="no data")]
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.02 + k * 0.33, 0.27),
                   frameon=False, fontsize=10, title="share of observed (approx., from overview)",
                   title_fontsize=9, alignment="left")


def _change_legend(fig, cls: Sequence[ClassInfo], counts: dict[int, int], exact: bool,
                   pixel_area_m2: float | None) -> None:
    """The change classes' legend: shares of the observed pixels (``exact``: from the record's counts, with
    hectares when ``pixel_area_m2`` is given; else approximate, from the overview)."""
    from matplotlib.patches import Patch

    note = ("change, share of observed pixels" if exact
            else "change, share of observed (approx., from overview)")
    total = sum(counts.values()) or 1

    def label(c: ClassInfo) -> str:
        ha = f", {counts[c.value] * pixel_area_m2 / 1e4:,.2f} ha" if pixel_area_m2 and exact else ""
        return f"{c.name.replace('_', ' ')}  {100 * counts[c.value] / total:.1f} %{ha}"

    handles = [Patch(facecolor=_rgb(c), edgecolor="#555555", label=label(c)) for c in cls]
    handles.append(Patch(facecolor="white", edgecolor="#555555", label="unobserved"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.68, 0.27), frameon=False, fontsize=10,
               title=note, title_fontsize=9, alignment="left")


def _rgb01(hex_colour: str) -> tuple[float, float, float, float]:
    h = hex_colour.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, 1.0)
