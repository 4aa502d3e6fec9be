"""The inputs of a mosaic, checked before any work: ``geoseg predict`` output folders (``run.json`` and the
rasters it lists) or batch output folders (``index.json``: their ``done`` scenes), all of one model and one
class table.  No torch, no dask."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio

from geoseg.errors import InputError, InputFileError
from geoseg.io.codes import ClassInfo

__all__ = ["MosaicInput", "collect_inputs", "check_same_model"]

BATCH_INDEX = "index.json"  # geoseg.predict.batch.INDEX (a sibling room: not imported)


@dataclass(frozen=True)
class MosaicInput:
    """One scene's prediction folder: its rasters, grid and what ``run.json`` says about it."""

    id: str
    folder: str
    landcover: str
    confidence: str | None
    probabilities: str | None
    crs_wkt: str
    transform: tuple[float, ...]
    width: int
    height: int
    run_id: str
    acquired: str | None
    model: dict[str, Any]
    classes: tuple[ClassInfo, ...]
    item: str | None  # the folder's STAC Item, when there is one

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a = self.transform
        xs = (a[2], a[2] + a[0] * self.width, a[2] + a[1] * self.height, a[2] + a[0] * self.width + a[1] * self.height)
        ys = (a[5], a[5] + a[3] * self.width, a[5] + a[4] * self.height, a[5] + a[3] * self.width + a[4] * self.height)
        return min(xs), min(ys), max(xs), max(ys)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable {what} ({e}); re-run geoseg predict into {path.parent}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path} is not a {what}; re-run geoseg predict into {path.parent}")
    return doc


def _scene(folder: Path, sid: str) -> MosaicInput:
    """One prediction folder, read and checked (the class map exists, is on the grid it says, has a CRS)."""
    record = _read_json(folder / "run.json", "geoseg run record")
    outputs = record.get("outputs") or {}
    if not isinstance(outputs, dict) or "landcover" not in outputs:
        raise InputError(f"{folder / 'run.json'} lists no landcover output; give folders written by geoseg predict")
    paths = {k: folder / v for k, v in outputs.items()}
    for key, p in paths.items():
        if key in ("landcover", "confidence", "probabilities") and not p.is_file():
            raise InputFileError(f"{p} (listed in {folder / 'run.json'}) does not exist; re-run geoseg predict "
                                 f"into {folder}")
    with rasterio.open(paths["landcover"]) as src:
        if src.crs is None:
            raise InputError(f"{paths['landcover']} has no CRS; a mosaic needs georeferenced predictions")
        crs_wkt, transform, width, height = src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height
    try:
        classes = tuple(ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in record["classes"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{folder / 'run.json'} has no valid class table; re-run geoseg predict into "
                         f"{folder}") from None
    item = folder / "item.json"
    conf, prob = paths.get("confidence"), paths.get("probabilities")
    return MosaicInput(
        id=sid, folder=str(folder), landcover=str(paths["landcover"]), confidence=str(conf) if conf else None,
        probabilities=str(prob) if prob else None, crs_wkt=crs_wkt, transform=transform, width=width,
        height=height, run_id=str(record.get("run_id", "")), acquired=record.get("acquired"),
        model=dict(record.get("model") or {}), classes=classes,
        item=str(item.resolve()) if item.is_file() else None)


def _batch(folder: Path) -> list[MosaicInput]:
    """The ``done`` scenes of a ``geoseg predict A B C -o OUT`` folder, in the index's order."""
    index = _read_json(folder / BATCH_INDEX, "geoseg batch run index")
    scenes = index.get("scenes")
    if not isinstance(scenes, dict):
        raise InputError(f"{folder / BATCH_INDEX} is not a geoseg batch run index; give a geoseg predict output folder")
    done = [(sid, e) for sid, e in scenes.items() if isinstance(e, dict) and e.get("status") == "done"]
    if not done:
        raise InputError(f"{folder / BATCH_INDEX} lists no finished scene; run geoseg predict into {folder} first")
    return [_scene(folder / str(e.get("outputs") or sid), sid) for sid, e in done]


def collect_inputs(paths: Sequence[str | os.PathLike]) -> list[MosaicInput]:
    """The scenes of ``paths`` (prediction folders, batch folders), in order; one-line errors for anything
    else.  A scene listed twice is an error (it would win its own overlaps)."""
    if not paths:
        raise InputError("no input given; pass geoseg predict output folders (or a batch output folder with "
                         "index.json)")
    out: list[MosaicInput] = []
    for p in paths:
        folder = Path(p)
        if not folder.is_dir():
            raise InputFileError(f"{folder} is not a folder; give geoseg predict output folders")
        if (folder / "run.json").is_file():
            out.append(_scene(folder, folder.resolve().name))
        elif (folder / BATCH_INDEX).is_file():
            out.extend(_batch(folder))
        else:
            raise InputFileError(f"{folder} has neither run.json nor {BATCH_INDEX}; give folders written by "
                                 "geoseg predict")
    seen: dict[str, str] = {}
    for s in out:
        key = os.path.realpath(s.landcover)
        if key in seen:
            raise InputError(f"{s.folder} is given twice (also as {seen[key]}); give each scene once")
        seen[key] = s.folder
    return out


def _table(classes: Sequence[ClassInfo], colours: bool) -> str:
    return ", ".join(f"{c.value}={c.name}" + (f" {c.color}" if colours else "") for c in classes)


def check_same_model(inputs: Sequence[MosaicInput]) -> None:
    """Every input must have the first one's class table (values, names, colours) and model (id, version)."""
    first = inputs[0]
    for s in inputs[1:]:
        if s.classes != first.classes:
            colours = [(c.value, c.name) for c in s.classes] == [(c.value, c.name) for c in first.classes]
            raise InputError(f"{s.folder} has classes {_table(s.classes, colours)} but {first.folder} has "
                             f"{_table(first.classes, colours)}; mosaic only predictions of one model")
        a, b = (first.model.get("id"), first.model.get("version")), (s.model.get("id"), s.model.get("version"))
        if a != b:
            raise InputError(f"{s.folder} was predicted by model {b[0]} {b[1]} but {first.folder} by {a[0]} "
                             f"{a[1]}; mosaic only predictions of one model")
