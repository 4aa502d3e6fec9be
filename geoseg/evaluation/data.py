"""The data set of ``evaluate_model``: an evaluation config (``images: [{image, label}]``) or the
validation split of a ``geoseg train`` config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geoseg.errors import InputError, InputFileError, ParameterError

__all__ = ["PREDICT_OPTIONS", "load_data_config"]

#: ``predict_scene`` options a data config may set under ``predict:``.
PREDICT_OPTIONS = ("bands", "tile_size", "overlap", "blend", "batch_size", "block_size", "device", "amp")


def load_data_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a data config; image/label paths become absolute (relative to the config)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"data config {path} does not exist; give a YAML file listing images and labels")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise InputError(f"data config {path} is not valid YAML ({first}); fix it") from None
    example = "images: [{image: scene.tif, label: labels.tif}]"
    if _is_training_config(raw):
        return _training_validation(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list) or not raw["images"]:
        raise InputError(f"data config {path} needs a non-empty 'images' list, e.g. {example}")
    unknown = set(raw) - {"images", "ignore", "align", "predict"}
    if unknown:
        raise InputError(f"data config {path} has unknown key(s) {', '.join(sorted(unknown))}; "
                         "allowed: images, ignore, align, predict")
    items = []
    for i, item in enumerate(raw["images"]):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise InputError(f"entry #{i + 1} of 'images' in {path} needs 'image' and 'label', e.g. {example}")
        pair = {k: str((path.parent / str(item[k])).resolve()) for k in ("image", "label")}
        for k, role in (("image", "image"), ("label", "label")):
            if not os.path.exists(pair[k]):
                raise InputFileError(f"{role} {pair[k]} (entry #{i + 1} of {path}) does not exist; check the path")
        items.append(pair)
    opts = raw.get("predict") or {}
    if not isinstance(opts, dict) or set(opts) - set(PREDICT_OPTIONS):
        raise InputError(f"'predict' in {path} may only set {', '.join(PREDICT_OPTIONS)}")
    return {"images": items, "ignore": raw.get("ignore"), "align": bool(raw.get("align", False)),
            "predict": dict(opts)}


def _is_training_config(raw: Any) -> bool:
    """A ``geoseg train`` config: image globs, ``pairs`` or a ``val_scenes`` split."""
    if not isinstance(raw, dict):
        return False
    images = raw.get("images")
    return bool({"pairs", "val_scenes", "labels", "arch"} & set(raw)) or (
        isinstance(images, list) and bool(images) and all(isinstance(i, str) for i in images))


def _training_validation(path: Path) -> dict[str, Any]:
    """The validation scenes of a training config (split by ``val_scenes``), as a data config."""
    from geoseg.training.config import build_config
    from geoseg.training.data import VECTOR_EXT, validation_pairs

    try:
        cfg = build_config(path)
        pairs = validation_pairs(cfg)
    except ParameterError as e:
        raise InputError(f"training config {path}: {e}") from None
    vector = [p.label for p in pairs if p.attribute or Path(p.label).suffix.lower() in VECTOR_EXT]
    if vector:
        raise InputError(f"label {vector[0]} is a vector layer; rasterize it onto the image grid first "
                         "(e.g. gdal_rasterize) and list image/label rasters in an evaluation config")
    return {"images": [{"image": p.image, "label": p.label} for p in pairs], "ignore": cfg.ignore_index,
            "align": cfg.align_labels, "predict": {}}
