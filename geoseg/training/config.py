"""The training configuration: one flat dataclass, loaded from YAML, every key also a CLI option.

Relative paths in a YAML file are relative to that file's folder; relative paths
given on the command line are relative to the current directory.  Unknown keys
are an error (a typo must not silently train something else).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from geoseg.errors import InputFileError, ModelPackageError, ParameterError
from geoseg.model.card import InputSpec

SPLITS = ("scenes", "blocks")
SAMPLINGS = ("random", "balanced")
SCHEDULES = ("onecycle", "cosine", "constant")
LOSSES = ("ce", "dice", "focal")
PRECISIONS = ("auto", "f32", "bf16")  # what each means: geoseg.training.precision
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _f(default: Any, help: str, kind: str = "scalar", path: bool = False) -> Any:
    """A config field with its help text; ``kind`` tells the CLI how to parse a value."""
    meta = {"help": help, "kind": kind, "path": path}
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(_json_copy, default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # -- data ----------------------------------------------------------------------------------
    images: list = _f([], "Glob(s) of training image rasters (each paired with a label by --labels).", "list", True)
    labels: str = _f("{dir}/label.tif", "Label of each globbed image: template with {dir} (image folder), {stem} "
                     "(file name without extension), {name}; a class raster, or vector polygons "
                     "(.gpkg, .geojson, .shp, ...).", "scalar", True)
    pairs: list = _f([], "Explicit pairs: list of {image, label[, attribute]} (YAML/JSON).", "yaml", True)
    label_attribute: str = _f("class", "Attribute of vector labels holding the class (value or class name).")
    exclude: list = _f([], "fnmatch patterns of image paths to leave out of training AND validation.", "list")
    bands: list = _f([], "Input band names in model order (default: all bands of the first image, by their "
                     "descriptions).", "list")
    classes: Any = _f(None, "Class list [{value, name, color}] or a JSON file with it (default: the classes of "
                      "--init-from).", "yaml", True)
    ignore_index: int = _f(255, "Label value excluded from loss and metrics (the label raster's nodata is too).")
    input_nodata: float = _f(0.0, "Image value meaning nodata when the raster declares none (such pixels are "
                             "ignored in training and enter the network as 0).", "float_or_none")
    input: Any = _f(None, "What the image values mean, written into the card: {sensor, level, quantity, dn_scale, "
                    "dn_offset} (physical = DN x dn_scale + dn_offset). Images with band scale/offset metadata "
                    "(SAFE, STAC Item, Landsat products, GDAL scale/offset) are converted to these DN. Default: "
                    "that of --init-from, else the level of the products read as reflectance x 10000.", "yaml")
    align_labels: bool = _f(False, "Resample label rasters on another grid onto the image grid (nearest) "
                            "instead of failing.")
    # -- validation split ----------------------------------------------------------------------
    split: str = _f("scenes", "Spatially disjoint validation: 'scenes' (whole scenes/groups) or 'blocks' "
                    "(square blocks of every scene).")
    val_scenes: list = _f([], "split=scenes: fnmatch patterns of image paths used for validation "
                          "(default: a random val_fraction of the scene groups).", "list")
    val_fraction: float = _f(0.2, "Fraction of scene groups (split=scenes) or blocks (split=blocks) for validation.")
    group_level: int = _f(0, "Scenes whose image shares the folder this many levels up form one group, always "
                          "on the same side of the split (0: every image alone; 2 for CITY/DATE/image.tif).")
    val_block: int = _f(512, "split=blocks: block size in pixels.")
    val_buffer: int = _f(32, "split=blocks: pixels around validation blocks excluded from training labels.")
    # -- model ---------------------------------------------------------------------------------
    arch: str = _f(None, "smp architecture (Unet, FPN, Segformer, ...) or PixelLinear/PixelMLP "
                   "(default Unet, or that of --init-from).", "str_or_none")
    encoder: str = _f(None, "smp encoder (default resnet18, or that of --init-from).", "str_or_none")
    arch_params: dict = _f({}, "Extra architecture arguments, e.g. {encoder_depth: 4}.", "yaml")
    init_from: str = _f(None, "Fine-tune from this model package (a new class list gets a new head).",
                        "str_or_none", True)
    freeze_encoder: bool = _f(False, "Do not train the encoder (fine-tuning).")
    model_id: str = _f(None, "Id of the output model (default <arch>-<encoder>-trained).", "str_or_none")
    description: str = _f("", "Description written into the model card.")
    version: str = _f("1.0.0", "Version written into the model card.")
    tile_size: int = _f(None, "Prediction tile size stored in the card (default 512).", "int_or_none")
    overlap: int = _f(None, "Prediction tile overlap stored in the card (default 64).", "int_or_none")
    gsd: float = _f(None, "Ground sample distance (m) for the card (default: from the first image).",
                    "float_or_none")
    # -- sampling and augmentation -------------------------------------------------------------
    window: int = _f(256, "Training window size in pixels (a multiple of the output stride).")
    samples_per_epoch: int = _f(512, "Windows per epoch.")
    batch_size: int = _f(8, "Windows per optimiser step.")
    sampling: str = _f("random", "'random' (windows centred on random labelled pixels) or 'balanced' "
                       "(part of the windows centred on a pixel of a uniformly drawn class).")
    balanced_fraction: float = _f(0.5, "sampling=balanced: fraction of class-balanced windows.")
    d4: bool = _f(True, "Random flips and 90-degree rotations.")
    brightness: float = _f(0.0, "Random additive brightness shift, +- this many sensor units (e.g. DN).")
    contrast: float = _f(0.0, "Random contrast factor 1 +- this, around each window's band means.")
    # -- loss and optimisation -----------------------------------------------------------------
    loss: Any = _f("ce", "Loss: ce, dice, focal, or a weighted sum such as 'ce:1,dice:0.5'.", "loss")
    class_weights: Any = _f(None, "Cross-entropy/focal class weights: a list (one per class), {name: weight}, "
                            "or 'auto' (inverse square root of training frequency).", "yaml")
    focal_gamma: float = _f(2.0, "Focal loss gamma.")
    epochs: int = _f(20, "Maximum number of epochs.")
    lr: float = _f(1e-3, "Peak learning rate (AdamW).")
    weight_decay: float = _f(1e-4, "AdamW weight decay.")
    schedule: str = _f("onecycle", "Learning-rate schedule: onecycle, cosine or constant.")
    patience: int = _f(0, "Early stopping: stop after this many epochs without a better validation mIoU "
                       "(0: never).")
    min_delta: float = _f(0.0, "Early stopping: smallest mIoU gain counted as better.")
    seed: int = _f(0, "Random seed (weights, windows, augmentation): same seed + config = same model.")
    device: str = _f("auto", "auto (CUDA when available), cpu, cuda or cuda:N.")
    threads: int = _f(None, "Torch CPU threads (default: all available cores).", "int_or_none")
    precision: str = _f("auto", "Training step precision: auto (bf16 autocast on a CPU with native BF16, "
                        "AMP on CUDA, else fp32), f32, or bf16 (an error where the hardware lacks it). "
                        "Weights and loss stay fp32.")
    memory_format: str = _f("auto", "Tensor layout of the training steps: auto (channels_last on CUDA and on "
                            "CPUs with AVX-512, where it is faster; contiguous on others, where it measured no "
                            "gain), channels_last or contiguous (the same numbers up to float rounding).")
    val_window: int = _f(512, "Validation tile size (a multiple of the output stride).")
    # -- output --------------------------------------------------------------------------------
    output: str = _f("model", "Model package folder to write (the best epoch by validation mIoU).", "scalar", True)
    work_dir: str = _f(None, "Checkpoints and logs (default: OUTPUT.train next to the output).",
                       "str_or_none", True)
    half: bool = _f(False, "Store the output weights as fp16 (half the size).")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(str(self.output).rstrip("/\\") + ".train")

    def validate(self) -> TrainConfig:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ParameterError(msg)

        need(bool(self.images) or bool(self.pairs), "no training data: give 'images' (a glob) or 'pairs' in the config")
        need(self.split in SPLITS, f"split {self.split!r} is unknown; use one of {', '.join(SPLITS)}")
        need(self.sampling in SAMPLINGS, f"sampling {self.sampling!r} is unknown; use one of {', '.join(SAMPLINGS)}")
        need(str(self.precision).lower() in PRECISIONS,
             f"precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        need(str(self.memory_format).lower() in MEMORY_FORMATS,
             f"memory_format {self.memory_format!r} is unknown; use one of {', '.join(MEMORY_FORMATS)}")
        need(self.schedule in SCHEDULES, f"schedule {self.schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
        need(0.0 <= self.val_fraction < 1.0, f"val_fraction {self.val_fraction} must be in [0, 1)")
        need(0.0 <= self.balanced_fraction <= 1.0, f"balanced_fraction {self.balanced_fraction} must be in [0, 1]")
        for key in ("window", "samples_per_epoch", "batch_size", "epochs", "val_window", "val_block"):
            need(int(getattr(self, key)) >= 1, f"{key} must be >= 1 (got {getattr(self, key)})")
        need(self.lr > 0, f"lr must be > 0 (got {self.lr})")
        need(self.patience >= 0 and self.val_buffer >= 0 and self.group_level >= 0,
             "patience, val_buffer and group_level must be >= 0")
        need(0 <= self.ignore_index <= 65535, f"ignore_index {self.ignore_index} must be in 0..65535")
        need(self.brightness >= 0 and 0 <= self.contrast < 1, "brightness must be >= 0 and contrast in [0, 1)")
        need(self.classes is not None or self.init_from is not None,
             "no class list: give 'classes' ([{value, name, color}] or a JSON file) or 'init_from'")
        parse_loss(self.loss)
        self.input_spec()
        return self

    def input_spec(self) -> InputSpec | None:
        """``input`` as the card's :class:`InputSpec` (None: not given); a one-line error when malformed."""
        if self.input is None:
            return None
        try:
            return InputSpec.from_json(self.input)
        except ModelPackageError as e:
            raise ParameterError(str(e).replace("the card's 'input'", "'input'").replace("; fix the JSON", "")
                                 .replace("the card's input", "input")) from None


def parse_loss(spec: Any) -> dict[str, float]:
    """'ce' | 'ce+dice' | 'ce:1,dice:0.5' | {ce: 1, dice: 0.5} -> {name: weight}."""
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, str):
        items = []
        for part in spec.replace("+", ",").split(","):
            part = part.strip()
            if not part:
                continue
            name, _, w = part.partition(":")
            items.append((name.strip(), w.strip() or 1.0))
    else:
        raise ParameterError(f"loss {spec!r} must be a name like 'ce' or weights like 'ce:1,dice:0.5'")
    out: dict[str, float] = {}
    for name, w in items:
        name = str(name).lower()
        if name not in LOSSES:
            raise ParameterError(f"loss {name!r} is unknown; combine {', '.join(LOSSES)} (e.g. 'ce:1,dice:0.5')")
        try:
            out[name] = float(w)
        except (TypeError, ValueError):
            raise ParameterError(f"loss weight {w!r} of {name} is not a number") from None
    if not out or all(v <= 0 for v in out.values()):
        raise ParameterError(f"loss {spec!r} has no term with a positive weight")
    return out


def parse_cli_value(key: str, raw: Any) -> Any:
    """A CLI string for ``key`` converted like the YAML value would be."""
    kind = {f.name: f.metadata.get("kind", "scalar") for f in fields(TrainConfig)}[key]
    if not isinstance(raw, str):
        return raw
    if kind == "list":
        import yaml

        if raw.strip().startswith("["):
            return yaml.safe_load(raw)
        return [v.strip() for v in raw.split(",") if v.strip()]
    if kind == "yaml":
        import yaml

        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ParameterError(f"--{key.replace('_', '-')}: {raw!r} is not valid YAML/JSON ({e})") from None
    if kind == "loss":
        return raw
    if raw.lower() in ("none", "null", "") and kind.endswith("_or_none"):
        return None
    return raw


def _coerce(name: str, value: Any) -> Any:
    f = {f.name: f for f in fields(TrainConfig)}[name]
    default = f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING \
        else None
    kind = f.metadata.get("kind", "scalar")
    if value is None:
        if kind.endswith("_or_none") or kind in ("yaml",) or default is None:
            return None
        raise ParameterError(f"config key '{name}' must not be empty")
    try:
        if kind == "list":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [str(v) if not isinstance(v, dict) else v for v in value]
        if kind == "yaml" and name == "pairs":
            if not isinstance(value, list) or not all(isinstance(p, dict) and "image" in p and "label" in p
                                                      for p in value):
                raise ParameterError("'pairs' must be a list of {image: PATH, label: PATH[, attribute: NAME]}")
            return value
        if kind == "yaml" and name == "arch_params":
            if not isinstance(value, dict):
                raise ParameterError("'arch_params' must be a mapping, e.g. {encoder_depth: 4}")
            return dict(value)
        if kind in ("yaml", "loss"):
            return value
        if kind == "int_or_none":
            return int(value)
        if kind == "float_or_none":
            return float(value)
        if kind == "str_or_none":
            return str(value)
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise TypeError
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ParameterError(f"config key '{name}' has a value of the wrong type: {value!r}") from None


def _resolve_paths(name: str, value: Any, base: Path) -> Any:
    """Make path-like values of ``name`` absolute against ``base`` (templates keep their braces)."""
    def one(p: Any) -> Any:
        if not isinstance(p, str) or not p or p.startswith("{"):
            return p
        return os.path.normpath(p if os.path.isabs(p) else str(base / p))

    if value is None:
        return None
    if name == "pairs":
        return [{**p, "image": one(p["image"]), "label": one(p["label"])} for p in value]
    if name == "classes":
        return one(value) if isinstance(value, str) else value
    if isinstance(value, list):
        return [one(v) for v in value]
    return one(value)


def build_config(yaml_path: str | os.PathLike | None, overrides: dict[str, Any] | None = None,
                 cwd: str | os.PathLike | None = None) -> TrainConfig:
    """Config from a YAML file plus ``overrides`` (CLI values win), validated, with absolute paths."""
    import yaml

    data: dict[str, Any] = {}
    base = Path(cwd or os.getcwd())
    if yaml_path is not None:
        p = Path(yaml_path)
        if not p.is_file():
            raise InputFileError(f"training config {p} does not exist; give a YAML file")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ParameterError(f"{p} is not valid YAML ({str(e).splitlines()[0]}); fix it") from None
        if not isinstance(loaded, dict):
            raise ParameterError(f"{p} must be a YAML mapping of config keys")
        unknown = sorted(set(loaded) - set(TrainConfig.keys()))
        if unknown:
            raise ParameterError(f"{p}: unknown config key(s) {', '.join(unknown)}; valid keys: "
                                 f"{', '.join(TrainConfig.keys())}")
        ybase = p.resolve().parent
        path_keys = {f.name for f in fields(TrainConfig) if f.metadata.get("path")}
        for k, v in loaded.items():
            v = _coerce(k, v)
            data[k] = _resolve_paths(k, v, ybase) if k in path_keys else v
    path_keys = {f.name for f in fields(TrainConfig) if f.metadata.get("path")}
    for k, v in (overrides or {}).items():
        if k not in TrainConfig.keys():  # noqa: SIM118 (keys() is the classmethod listing the fields)
            raise ParameterError(f"unknown config key {k!r}")
        v = _coerce(k, parse_cli_value(k, v))
        data[k] = _resolve_paths(k, v, base) if k in path_keys else v
    # 'labels' is a template; a relative one is relative to the image folder via {dir}, or to the base.
    return TrainConfig(**data).validate()
