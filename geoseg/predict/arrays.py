"""``predict_xarray``: the prediction core for arrays people already hold (rioxarray, odc-stac, stackstac).

The same tiles, model runtimes, radiometric conversion and overlap blending as ``predict_scene``
(:mod:`geoseg.predict.tasks`), but the input is a ``(band, y, x)`` :class:`xarray.DataArray`, numpy or dask
backed, and the output is a lazy dask-backed DataArray of class codes on the same coordinates: nothing is
computed until the caller asks (``.compute()``, ``.rio.to_raster()``), and then only tile batches touching the
requested blocks run.

What xarray users get from each library:

* ``rioxarray.open_rasterio(path, chunks=True)``: ``(band, y, x)`` with ``band`` 1..n; name the bands with
  ``.assign_coords(band=["B2", "B3", ...])`` or pass ``bands=`` (1-based, like ``--bands``);
* ``odc.stac.load(...)``: a Dataset of per-band variables: ``ds.isel(time=0).to_array("band")``;
* ``stackstac.stack(...)``: ``(time, band, y, x)`` with band names: ``arr.isel(time=0)``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.errors import InputError, ParameterError
from geoseg.io.grid import plan_blocks, plan_tiles
from geoseg.io.radiometry import InputTransform, array_stats, decide
from geoseg.io.raster import match_bands
from geoseg.model.card import ModelCard
from geoseg.model.package import read_card, resolve
from geoseg.predict.blend import BLEND_MODES, NODATA

__all__ = ["predict_xarray"]

#: side of the decimated sample the input check computes (as for files, io.radiometry.SAMPLE_SIDE)
_SAMPLE_SIDE = 512


def _layout(data: Any) -> tuple[str, str, str]:
    """(band, y, x) dimension names of a 3-D DataArray, or a one-line error."""
    dims = tuple(str(d) for d in data.dims)
    if len(dims) != 3:
        raise InputError(f"predict_xarray needs a 3-D (band, y, x) DataArray, got dims {dims}; select one time "
                         "step (e.g. .isel(time=0)) or stack the variables (.to_array('band'))")
    spatial = [d for d in dims if d in ("y", "x", "latitude", "longitude", "lat", "lon")]
    if len(spatial) != 2 or dims[0] in spatial:
        raise InputError(f"predict_xarray needs dims (band, y, x), got {dims}; transpose it, e.g. "
                         ".transpose('band', 'y', 'x')")
    return dims[0], dims[1], dims[2]


def _band_names(data: Any, band_dim: str) -> list[str | None]:
    """Band names from the band coordinate (``assign_coords(band=[...])``, stackstac), else from rioxarray's
    ``long_name`` attribute (the file's band descriptions)."""
    n = data.sizes[band_dim]
    if band_dim in data.coords:
        values = [v.item() if hasattr(v, "item") else v for v in data.coords[band_dim].values]
        if all(isinstance(v, str) for v in values):
            return list(values)
    long_name = data.attrs.get("long_name")
    if isinstance(long_name, (list, tuple)) and len(long_name) == n and all(isinstance(v, str) for v in long_name):
        return list(long_name)
    return [None] * n


def _nodata(data: Any, nodata: float | None) -> float | None:
    if nodata is not None:
        return float(nodata)
    for key in ("_FillValue", "nodata"):
        if data.attrs.get(key) is not None:
            return float(data.attrs[key])
    rio = getattr(data, "rio", None)  # rioxarray's accessor, when it is installed
    value = getattr(rio, "nodata", None) if rio is not None else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _sample(data: Any, band_idx: Sequence[int], nodata: float | None) -> Any:
    h, w = data.shape[1:]
    step = max(1, math.ceil(max(h, w) / _SAMPLE_SIDE))
    part = np.asarray(data[[b - 1 for b in band_idx], ::step, ::step].values)
    floating = np.issubdtype(part.dtype, np.floating)
    return array_stats(part, [nodata] * len(band_idx), floating)


def _radiometry(data: Any, card: ModelCard, band_idx: Sequence[int], nodata: float | None,
                input_scale: float | str | None, input_offset: float | None, check: bool) -> InputTransform:
    spec = card.input
    means = card.normalization.a if spec is not None and card.normalization.kind == "meanstd" else None
    scale, offset = data.attrs.get("scale_factor"), data.attrs.get("add_offset")  # rioxarray, mask_and_scale=False
    n = len(band_idx)
    return decide(lambda: _sample(data, band_idx, nodata), [scale] * n, [offset] * n, card.bands, means=means,
                  stds=card.normalization.b if means is not None else None,
                  dn_scale=spec.dn_scale if spec else None, dn_offset=spec.dn_offset if spec else 0.0,
                  input_scale=input_scale, input_offset=input_offset, check=check, label="the DataArray")


# long: validation of every option before the graph, then the spec and the lazy result, in order
def predict_xarray(
    data: Any,
    model: str = "default",
    *,
    bands: Sequence[int] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    blend: str = "cosine",
    batch_size: int | None = None,
    block_size: int = 1024,
    device: str = "auto",
    runtime: str = "auto",
    precision: str = "f32",
    tta: str = "none",
    nodata: float | None = None,
    input_scale: float | str | None = None,
    input_offset: float | None = None,
    input_check: bool = True,
    probabilities: bool = False,
) -> Any:
    """Land-cover classes of ``data`` (a ``(band, y, x)`` DataArray) as a lazy dask-backed DataArray.

    Bands are matched by the band coordinate's names (any alias: ``B02``, ``blue``...), else taken in the model's
    order with a warning; ``bands`` picks them by 1-based position.  ``nodata`` (default: the array's
    ``_FillValue``/``nodata`` attribute or rioxarray's) and NaN are invalid input: their pixels are
    :data:`~geoseg.predict.blend.NODATA` (255).  The values are converted to the model's units as for files
    (``scale_factor``/``add_offset`` attributes, else the statistics check; ``input_scale``/``input_offset``).

    Returns the class DataArray (dims ``y, x``, uint8, attrs ``flag_values``/``flag_meanings``, ``_FillValue``,
    ``geoseg_radiometry``), or with ``probabilities`` a Dataset of ``classes`` and ``probabilities``
    (``class, y, x``, float32, NaN where no valid input).  The CRS (rioxarray's ``spatial_ref``) is carried over.
    """
    import xarray as xr

    from geoseg._util.execution import default_workers
    from geoseg.model.runtime import TTA_MODES, choose_runtime, prepare_graph
    from geoseg.predict import graph
    from geoseg.predict.tasks import RunSpec

    band_dim, ydim, xdim = _layout(data)
    model_path = resolve(model)
    card = read_card(model_path)
    names = _band_names(data, band_dim)
    count = data.sizes[band_dim]
    if bands is None:
        band_idx = match_bands(card.bands, names, count)
    else:
        band_idx = list(bands)
        if len(band_idx) != len(card.bands) or not all(1 <= b <= count for b in band_idx):
            raise ParameterError(f"bands={band_idx}: give {len(card.bands)} positions in 1..{count} "
                                 f"for the model's {','.join(card.bands)}")
    if blend not in BLEND_MODES or tta not in TTA_MODES:
        raise ParameterError(f"blend must be one of {', '.join(BLEND_MODES)} and tta one of {', '.join(TTA_MODES)}")
    if not card.trained:
        warnings.warn(f"model {card.id} is untrained (random weights): its classes are meaningless",
                      UserWarning, stacklevel=2)
    fill = _nodata(data, nodata)
    transform = _radiometry(data, card, band_idx, fill, input_scale, input_offset, input_check)
    h, w = data.sizes[ydim], data.sizes[xdim]
    tile = card.tile_size if tile_size is None else int(tile_size)
    plan = plan_tiles(h, w, tile, card.overlap if overlap is None else int(overlap), card.output_stride)
    blocks = plan_blocks(h, w, block_size)
    engine = prepare_graph(model_path, choose_runtime(runtime, device, precision))
    cpu = engine.device_type == "cpu"
    spec = RunSpec(
        scene_path="", bands=tuple(band_idx), use_masks=False, input_nodata=fill, model_path=str(model_path),
        device=engine.device, amp=None, torch_threads=default_workers() if cpu else 1,
        batch_size=batch_size or engine.batch_size,
        overlap=plan.overlap, blend=blend, height=h, width=w, block_size=block_size,
        class_values=tuple(card.class_values), tta=tta,
        input_scale=None if transform.is_identity else transform.scale,
        input_offset=None if transform.is_identity else transform.offset,
        runtime=engine.runtime, precision=engine.precision,
    )
    selected = data.isel({band_dim: [b - 1 for b in band_idx]}).data
    classes, probs = graph.lazy_arrays(spec, list(plan), blocks, selected, probabilities)
    coords = {k: v for k, v in data.coords.items() if band_dim not in v.dims}
    attrs = {"_FillValue": NODATA, "flag_values": list(card.class_values),
             "flag_meanings": " ".join(c.name for c in card.classes), "geoseg_model": card.id,
             "geoseg_radiometry": json.dumps(transform.to_json()), "geoseg_runtime": json.dumps(engine.to_json())}
    out = xr.DataArray(classes, dims=(ydim, xdim), coords=coords, attrs=attrs, name="classes")
    if not probabilities:
        return out
    p = xr.DataArray(probs, dims=("class", ydim, xdim),
                     coords={**coords, "class": [c.name for c in card.classes]}, name="probabilities")
    return xr.Dataset({"classes": out, "probabilities": p})
