"""The model card: everything needed to run a model correctly, as plain JSON.

Pure data and validation, no torch: ``geoseg model info`` and band matching work
without loading a network.  The card is ``geoseg-model.json`` in a model folder,
or the ``geoseg-model`` metadata entry of a single ``.safetensors`` file.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from geoseg.errors import ModelPackageError, ParameterError
from geoseg.io.codes import ClassInfo  # re-exported: the card's class table

CARD_FORMAT = 1
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Normalization:
    """Maps input values (in the sensor's units, e.g. Sentinel-2 DN) to network input.

    ``meanstd``: ``(x - mean) / std``; ``scale``: ``x * scale + offset``.  One number per band.
    Input nodata pixels enter the network as 0 after normalisation.
    """

    kind: str
    a: tuple[float, ...]  # mean or scale
    b: tuple[float, ...]  # std or offset

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise a (..., bands, h, w) float32 array in place-safe fashion; returns float32."""
        a = np.asarray(self.a, dtype=np.float32)[:, None, None]
        b = np.asarray(self.b, dtype=np.float32)[:, None, None]
        if self.kind == "meanstd":
            return ((x - a) / b).astype(np.float32, copy=False)
        return (x * a + b).astype(np.float32, copy=False)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "meanstd":
            return {"type": "meanstd", "mean": list(self.a), "std": list(self.b)}
        return {"type": "scale", "scale": list(self.a), "offset": list(self.b)}

    @classmethod
    def from_json(cls, d: dict[str, Any], n_bands: int) -> Normalization:
        kind = d.get("type")
        keys = {"meanstd": ("mean", "std"), "scale": ("scale", "offset")}
        if kind not in keys:
            raise ModelPackageError(
                f"normalization type {kind!r} is unknown; use 'meanstd' (mean, std) or 'scale' (scale, offset)"
            )
        ka, kb = keys[kind]
        try:
            a = tuple(float(v) for v in d[ka])
            b = tuple(float(v) for v in d[kb])
        except (KeyError, TypeError, ValueError):
            raise ModelPackageError(
                f"normalization '{kind}' needs numeric lists '{ka}' and '{kb}' with one value per band"
            ) from None
        if len(a) != n_bands or len(b) != n_bands:
            raise ModelPackageError(
                f"normalization has {len(a)}/{len(b)} values but the model has {n_bands} bands; "
                "give one value per band"
            )
        if kind == "meanstd" and any(v <= 0 for v in b):
            raise ModelPackageError("normalization std values must be > 0; fix the model card")
        return cls(kind, a, b)


@dataclass(frozen=True)
class InputSpec:
    """What the network's input values mean: the sensor and product level it was trained on, the physical
    quantity, and how the card's DN map to it (``physical = DN * dn_scale + dn_offset``)."""

    sensor: str | None = None  # e.g. "sentinel-2"
    level: str | None = None  # e.g. "L1C", "L2A"
    quantity: str | None = None  # "toa_reflectance" or "surface_reflectance"
    dn_scale: float = 1.0
    dn_offset: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> InputSpec:
        if not isinstance(d, dict):
            raise ModelPackageError("the card's 'input' must be an object {sensor, level, quantity, dn_scale, "
                                    "dn_offset}; fix the JSON")
        unknown = set(d) - {"sensor", "level", "quantity", "dn_scale", "dn_offset"}
        if unknown:
            raise ModelPackageError(f"the card's 'input' has unknown keys {sorted(unknown)}; valid: sensor, level, "
                                    "quantity, dn_scale, dn_offset")
        scale = float(d.get("dn_scale", 1.0))
        if not scale > 0:
            raise ModelPackageError(f"the card's input dn_scale {scale} must be > 0")
        return cls(sensor=d.get("sensor"), level=d.get("level"), quantity=d.get("quantity"), dn_scale=scale,
                   dn_offset=float(d.get("dn_offset", 0.0)))


@dataclass(frozen=True)
class ModelCard:
    id: str
    architecture: str
    encoder: str | None
    bands: tuple[str, ...]
    classes: tuple[ClassInfo, ...]
    normalization: Normalization
    tile_size: int = 512
    overlap: int = 64
    output_stride: int = 32
    gsd_m: float | None = 10.0
    input_nodata: float | None = 0.0
    version: str = "0.1.0"
    trained: bool = False
    description: str = ""
    arch_params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # metrics, training data, ... (kept verbatim)
    input: InputSpec | None = None  # what input values mean; None: undeclared (no radiometric check)

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def class_values(self) -> list[int]:
        return [c.value for c in self.classes]

    def with_(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)

    # -- JSON -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "geoseg_model_format": CARD_FORMAT,
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "trained": self.trained,
            "architecture": self.architecture,
            "encoder": self.encoder,
            "arch_params": dict(self.arch_params),
            "in_channels": self.in_channels,
            "bands": list(self.bands),
            "classes": [asdict(c) for c in self.classes],
            "normalization": self.normalization.to_json(),
            "input_nodata": self.input_nodata,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "output_stride": self.output_stride,
            "gsd_m": self.gsd_m,
        }
        if self.input is not None:
            d["input"] = self.input.to_json()
        d.update(self.extra)
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    @classmethod
    def from_json(cls, d: Any) -> ModelCard:
        if not isinstance(d, dict):
            raise ModelPackageError("the model card is not a JSON object; regenerate it with 'geoseg model init'")
        fmt = d.get("geoseg_model_format")
        if fmt != CARD_FORMAT:
            raise ModelPackageError(
                f"model card format {fmt!r} is not supported (expected {CARD_FORMAT}); "
                "is this a geoseg model package? create one with 'geoseg model init'"
            )
        missing = [k for k in ("id", "architecture", "bands", "classes", "normalization") if k not in d]
        if missing:
            raise ModelPackageError(f"model card lacks {', '.join(missing)}; add them or recreate the package")
        bands = tuple(str(b) for b in d["bands"])
        if not bands:
            raise ModelPackageError("model card lists no input bands; give 'bands' in input order")
        if "in_channels" in d and int(d["in_channels"]) != len(bands):
            raise ModelPackageError(
                f"model card says in_channels={d['in_channels']} but lists {len(bands)} bands; make them agree"
            )
        classes = parse_classes(d["classes"])
        known = {
            "geoseg_model_format", "id", "version", "description", "trained", "architecture", "encoder",
            "arch_params", "in_channels", "bands", "classes", "normalization", "input_nodata", "tile_size",
            "overlap", "output_stride", "gsd_m", "input",
        }
        try:
            return cls(
                id=str(d["id"]),
                version=str(d.get("version", "0.1.0")),
                description=str(d.get("description", "")),
                trained=bool(d.get("trained", False)),
                architecture=str(d["architecture"]),
                encoder=None if d.get("encoder") is None else str(d["encoder"]),
                arch_params=dict(d.get("arch_params") or {}),
                bands=bands,
                classes=classes,
                normalization=Normalization.from_json(d["normalization"], len(bands)),
                input_nodata=None if d.get("input_nodata") is None else float(d["input_nodata"]),
                tile_size=int(d.get("tile_size", 512)),
                overlap=int(d.get("overlap", 64)),
                output_stride=int(d.get("output_stride", 32)),
                gsd_m=None if d.get("gsd_m") is None else float(d["gsd_m"]),
                input=None if d.get("input") is None else InputSpec.from_json(d["input"]),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (TypeError, ValueError) as e:
            raise ModelPackageError(f"model card has a badly typed field ({e}); fix the JSON") from None


def read_class_file(path: str) -> list:
    """The class list of a JSON file: a list of ``{value, name, color}``, or an object with ``classes``."""
    from pathlib import Path

    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ParameterError(f"class file {path} does not exist; give a JSON list of {{value, name, color}}") from None
    except json.JSONDecodeError as e:
        raise ParameterError(f"class file {path} is not valid JSON ({e.msg}); fix it") from None
    return raw["classes"] if isinstance(raw, dict) and "classes" in raw else raw


def parse_classes(items: Any) -> tuple[ClassInfo, ...]:
    """Validate a class list ``[{value, name, color}, ...]``: values 0..254, unique; colours ``#RRGGBB``."""
    if not isinstance(items, list) or not items:
        raise ModelPackageError("'classes' must be a non-empty list of {value, name, color} objects")
    out: list[ClassInfo] = []
    for i, c in enumerate(items):
        if not isinstance(c, dict) or "value" not in c or "name" not in c:
            raise ModelPackageError(f"class #{i} needs 'value' and 'name' (and 'color' as #RRGGBB)")
        try:
            value = int(c["value"])
        except (TypeError, ValueError):
            raise ModelPackageError(f"class #{i} value {c['value']!r} is not an integer") from None
        if not 0 <= value <= 254:
            raise ModelPackageError(f"class {c['name']!r} has value {value}; use 0..254 (255 is nodata)")
        color = str(c.get("color") or default_color(i))
        if not _HEX.match(color):
            raise ModelPackageError(f"class {c['name']!r} colour {color!r} is not of the form #RRGGBB")
        out.append(ClassInfo(value, str(c["name"]), color.upper()))
    values = [c.value for c in out]
    if len(set(values)) != len(values):
        raise ModelPackageError(f"class values must be unique, got {values}")
    return tuple(out)


_PALETTE = ["#419BDF", "#397D49", "#88B053", "#7A87C6", "#E49635", "#DFC35A", "#C4281B", "#A59B8F", "#B39FE1"]


def default_color(i: int) -> str:
    if i < len(_PALETTE):
        return _PALETTE[i]
    rng = np.random.default_rng(i)
    r, g, b = (int(v) for v in rng.integers(40, 220, 3))
    return f"#{r:02X}{g:02X}{b:02X}"
