"""One factory over a registry of architectures: every smp architecture plus geoseg's own.

geoseg's own architectures are small per-pixel networks: ``PixelLinear`` (a
per-pixel linear classifier, i.e. a 1x1 convolution: a spectral baseline whose
output is a known function of its input, used by the stitching tests) and
``PixelMLP``.  Their output stride is 1.  Pretrained weights are never
downloaded: smp encoders are always built with ``encoder_weights=None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from geoseg.errors import ModelPackageError


class PixelLinear(nn.Module):
    """Per-pixel linear map of the bands to class logits (a 1x1 convolution)."""

    def __init__(self, in_channels: int, classes: int, **_: Any) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class PixelMLP(nn.Module):
    """Per-pixel two-layer perceptron (1x1 convolutions)."""

    def __init__(self, in_channels: int, classes: int, hidden: int = 32, **_: Any) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


_GEOSEG_ARCHS: dict[str, Callable[..., nn.Module]] = {"PixelLinear": PixelLinear, "PixelMLP": PixelMLP}


def _smp_archs() -> dict[str, type]:
    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def architectures() -> list[str]:
    """All architecture names the factory accepts (case-insensitive)."""
    return sorted(_smp_archs()) + sorted(_GEOSEG_ARCHS)


def canonical_arch(name: str) -> str:
    """The registry's spelling of ``name``; ModelPackageError listing the choices if unknown."""
    by_lower = {a.lower(): a for a in architectures()}
    key = name.lower().replace("_", "").replace("-", "")
    for lower, canon in by_lower.items():
        if lower.replace("_", "").replace("-", "") == key:
            return canon
    raise ModelPackageError(f"unknown architecture {name!r}; choose one of {', '.join(architectures())}")


def output_stride(arch: str, arch_params: dict[str, Any] | None = None) -> int:
    """Pixel alignment tiles need so that tiling matches a whole-image pass."""
    arch = canonical_arch(arch)
    if arch in _GEOSEG_ARCHS:
        return 1
    depth = int((arch_params or {}).get("encoder_depth", 5))
    return 2**depth


def build_model(arch: str, encoder: str | None, in_channels: int, classes: int, **params: Any) -> nn.Module:
    """Build an untrained network.  smp encoders get ``encoder_weights=None`` (no downloads)."""
    arch = canonical_arch(arch)
    if arch in _GEOSEG_ARCHS:
        return _GEOSEG_ARCHS[arch](in_channels=in_channels, classes=classes, **params)
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders:
        raise ModelPackageError(
            f"unknown encoder {encoder!r} for {arch}; choose one of {', '.join(sorted(encoders))}"
        )
    params.pop("encoder_weights", None)
    try:
        return smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes, **params
        )
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ModelPackageError(f"cannot build {arch} with encoder {encoder} and {params}: {e}") from None
