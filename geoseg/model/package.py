"""Model packages on disk: ``DIR/{model.safetensors, geoseg-model.json}`` or one ``.safetensors`` file.

Weights are safetensors only: loading never unpickles anything.  Reading the
card needs no torch; :func:`load_model` imports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from geoseg._util.atomic import atomic_dir
from geoseg.errors import ModelPackageError, OutputExistsError
from geoseg.model.card import ModelCard

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

CARD_NAME = "geoseg-model.json"
WEIGHTS_NAME = "model.safetensors"
META_KEY = "geoseg-model"
#: Built-in packages, resolvable by short name (``--model default``).
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


def builtin_models() -> list[str]:
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / CARD_NAME).exists())


def resolve(ref: str | os.PathLike) -> Path:
    """A model reference (path to a package, or a built-in short name) as a path."""
    p = Path(ref)
    if p.exists():
        return p
    if isinstance(ref, str) and os.sep not in ref and (BUILTIN_DIR / ref / CARD_NAME).exists():
        return BUILTIN_DIR / ref
    names = builtin_models()
    known = f"; built-in models: {', '.join(names)}" if names else ""
    raise ModelPackageError(
        f"model {os.fspath(ref)} not found; give a package folder or .safetensors file "
        f"(create one with 'geoseg model init'){known}"
    )


def _weights_path(path: Path) -> Path:
    return path / WEIGHTS_NAME if path.is_dir() else path


def read_card(ref: str | os.PathLike) -> ModelCard:
    """The card of a package, validated, without loading weights or torch."""
    path = resolve(ref)
    if path.is_dir():
        card_path = path / CARD_NAME
        if not card_path.exists():
            raise ModelPackageError(f"{path} has no {CARD_NAME}; is it a geoseg model package?")
        try:
            raw = json.loads(card_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelPackageError(f"{card_path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); "
                                    "fix or regenerate it") from None
        return ModelCard.from_json(raw)
    meta = _safetensors_metadata(path)
    if META_KEY not in meta:
        raise ModelPackageError(
            f"{path} carries no geoseg model card in its metadata; use a package folder with {CARD_NAME}"
        )
    try:
        return ModelCard.from_json(json.loads(meta[META_KEY]))
    except json.JSONDecodeError:
        raise ModelPackageError(f"the model card inside {path} is not valid JSON; re-save the model") from None


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelPackageError(
            f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); re-create the package"
        ) from None


def load_model(ref: str | os.PathLike) -> tuple[ModelCard, nn.Module]:
    """Build the network of a package and load its weights (strict, float32, eval mode, on the CPU)."""
    import torch
    from safetensors.torch import load_file

    from geoseg.model.registry import build_model

    path = resolve(ref)
    card = read_card(path)
    weights = _weights_path(path)
    if not weights.exists():
        raise ModelPackageError(f"{path} has no {WEIGHTS_NAME}; the package is incomplete")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelPackageError(
            f"{weights} is corrupt or not safetensors ({str(e).splitlines()[0]}); re-create the package"
        ) from None
    net = build_model(card.architecture, card.encoder, card.in_channels, card.n_classes, **card.arch_params)
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise ModelPackageError(
            f"weights in {weights} do not fit {card.architecture}/{card.encoder} with "
            f"{card.in_channels} bands and {card.n_classes} classes ({first}); the card and weights disagree"
        ) from None
    net.eval()
    return card, net


def init_package(card: ModelCard, out: str | os.PathLike, *, seed: int = 0, overwrite: bool = False) -> Path:
    """An untrained package: the card's network with seeded random weights (a start for training, a demo,
    tests); its card should say ``trained=False``."""
    import torch

    from geoseg.model.registry import build_model

    torch.manual_seed(seed)
    net = build_model(card.architecture, card.encoder, card.in_channels, card.n_classes, **card.arch_params)
    return save_package(card, net, out, overwrite=overwrite)


def save_package(
    card: ModelCard, net: nn.Module, out: str | os.PathLike, overwrite: bool = False, half: bool = False
) -> Path:
    """Write a package folder atomically (temp folder + rename).  ``half`` stores float weights as fp16."""
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; choose another path or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {}
    for k, v in net.state_dict().items():
        v = v.detach().to("cpu")
        if half and v.is_floating_point():
            v = v.to(torch.float16)
        state[k] = v.contiguous()
    with atomic_dir(out, shared=True) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={META_KEY: json.dumps(card.to_json())})
        (tmp / CARD_NAME).write_text(card.dumps() + "\n")
    return out
