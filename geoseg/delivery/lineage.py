"""How a prediction's input was read and converted, in words: one source for the report's inputs table and the
STAC Item's ``processing:lineage`` (both read ``run.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["input_lines", "lineage"]


def _product(source: dict[str, Any]) -> str | None:
    what = " ".join(str(v) for v in (source.get("sensor"), source.get("level")) if v)
    meta = source.get("metadata") or {}
    details = [f"{label} {meta[key]}" for key, label in (("processing_baseline", "processing baseline"),
                                                         ("tile_id", "tile"), ("product_id", "product"))
               if meta.get(key)]
    if meta.get("cloud_cover") not in (None, ""):
        details.append(f"cloud cover {meta['cloud_cover']} %")
    text = " ".join(p for p in (what or "bands", f"({', '.join(details)})" if details else "") if p)
    bands = source.get("bands")
    return f"{text}; bands {','.join(bands)}" if bands else text


def _numbers(values: list[float]) -> str:
    uniq = sorted({float(v) for v in values})
    return f"{uniq[0]:g}" if len(uniq) == 1 else "per band " + ",".join(f"{float(v):g}" for v in values)


def _radiometry(r: dict[str, Any]) -> str | None:
    source = r.get("source")
    scale, offset = r.get("scale") or [], r.get("offset") or []
    identity = all(float(s) == 1.0 for s in scale) and all(float(o) == 0.0 for o in offset)
    how = {"band metadata": "from the scene's band scale/offset metadata",
           "options": "set by --input-scale/--input-offset",
           "detected": f"detected by the input check ({r.get('detected')}) and applied (--input-scale auto)",
           "unchecked": "not checked (--no-input-check)",
           "none": "checked against the model's training statistics"}.get(str(source), str(source))
    if identity:
        return f"values used as read ({how})"
    return f"model DN = scene DN x {_numbers(scale)} + {_numbers(offset)} ({how})"


def input_lines(record: dict[str, Any]) -> list[tuple[str, str]]:
    """``[(label, text)]`` of the product read and the radiometric conversion applied (empty for old records)."""
    out = []
    if isinstance(record.get("source"), dict) and (text := _product(record["source"])):
        out.append(("product", text))
    if isinstance(record.get("radiometry"), dict) and (text := _radiometry(record["radiometry"])):
        out.append(("radiometry", text))
    mask = record.get("cloud_mask")
    if isinstance(mask, dict):
        n = record.get("cloud_pixels")
        left = f"; {n:,} pixels left out (nodata in the map, 254 in confidence.tif)" if isinstance(n, int) else ""
        out.append(("cloud mask", f"{mask.get('description') or mask.get('kind')} from {mask.get('origin')}{left}"))
    return out


def lineage(record: dict[str, Any]) -> str:
    """One paragraph for ``processing:lineage``: the scene, the product, the conversion and the model (for a
    mosaic: its inputs and the overlap rule)."""
    model = record.get("model") or {}
    mosaic = record.get("mosaic")
    if isinstance(mosaic, dict):
        inputs = mosaic.get("inputs") or []
        return (f"Mosaic by geoseg {record.get('geoseg_version', '?')} of {len(inputs)} land-cover predictions "
                f"of model {model.get('id', '?')} (trained: {model.get('trained')}), read onto one grid with "
                f"nearest-neighbour resampling; where scenes overlap the {mosaic.get('rule')} rule chose "
                f"(docs/mosaic.md). Inputs: {', '.join(str(i.get('folder')) for i in inputs)}.")
    parts = [f"Land cover predicted by geoseg {record.get('geoseg_version', '?')} with model {model.get('id', '?')}"
             f" (trained: {model.get('trained')}) from {record.get('scene', '?')}."]
    parts += [f"{label.capitalize()}: {text}." for label, text in input_lines(record)]
    return " ".join(parts)
