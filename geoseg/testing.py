"""Helpers for geoseg's tests and for users testing code built on geoseg (as odc-geo ships ``testutils``):
tiny georeferenced rasters built in code with a real projected CRS, scenes whose class is a known function
of their values, and model packages whose output is known exactly.

Needs numpy and rasterio; the model builders also need torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

__all__ = ["CRS", "ORIGIN", "RES", "BANDS4", "write_raster", "class_pattern", "pattern_scene", "expected_probs",
           "linear_model_package", "unet_model_package", "TEST_CLASSES", "prediction_folder"]

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_100_000.0)
RES = 10.0
BANDS4 = ("B2", "B3", "B4", "B8")


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = CRS,
    transform=None,
    nodata: float | None = None,
    descriptions=None,
    **tags,
) -> Path:
    """Write a (bands, h, w) array as a tiled GeoTIFF with a 10 m UTM 33N grid by default."""
    if data.ndim == 2:
        data = data[None]
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = transform or Affine(RES, 0.0, ORIGIN[0], 0.0, -RES, ORIGIN[1])
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
        if tags:
            dst.update_tags(**tags)
    return path


def class_pattern(h: int, w: int) -> np.ndarray:
    """A deterministic class pattern (0..2) with features at many scales: stripes, blocks, diagonals."""
    r, c = np.mgrid[0:h, 0:w]
    return ((r // 7 + c // 13) % 3 + ((r + c) // 50) % 2 * ((c // 3) % 2)) % 3


def pattern_scene(h: int, w: int, margin: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """4-band uint16 scene whose *known* class (argmax of bands 0..2) follows :func:`class_pattern`.

    The winning band is ``margin`` DN above the others, so a per-pixel linear model
    that reads bands 0..2 has well separated logits (no near-ties).
    """
    cls = class_pattern(h, w)
    rng = np.random.default_rng(42)
    base = rng.integers(1000, 1200, size=(4, h, w))
    for k in range(3):
        base[k] += np.where(cls == k, margin, 0)
    return base.astype(np.uint16), cls.astype(np.uint8)


def expected_probs(scene: np.ndarray) -> np.ndarray:
    """Softmax of the linear test model, computed in float64 numpy (independent of torch)."""
    z = scene[:3].astype(np.float64) * 0.01
    z -= z.max(axis=0, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=0, keepdims=True)


#: the linear test model's classes as ``run.json`` lists them
TEST_CLASSES = ({"value": 0, "name": "water", "color": "#419BDF"}, {"value": 1, "name": "trees", "color": "#397D49"},
                {"value": 2, "name": "built", "color": "#C4281B"})


def prediction_folder(path: str | os.PathLike, landcover: np.ndarray, confidence: np.ndarray | None = None, *,
                      crs: str = CRS, transform=None, classes=TEST_CLASSES, model_id: str = "test-linear",
                      acquired: str | None = None, probabilities: np.ndarray | None = None) -> Path:
    """A ``geoseg predict`` output folder with *known* products: ``landcover.tif`` (uint8, nodata 255),
    optionally ``confidence.tif`` (percent, 254 cloud, nodata 255) and ``probabilities.tif`` ((classes, h, w)
    percent) and a ``run.json`` listing them (as the inputs of ``geoseg mosaic``)."""
    import json

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    write_raster(out / "landcover.tif", landcover.astype(np.uint8), crs=crs, transform=transform, nodata=255)
    outputs = {"landcover": "landcover.tif"}
    if confidence is not None:
        write_raster(out / "confidence.tif", confidence.astype(np.uint8), crs=crs, transform=transform, nodata=255)
        outputs["confidence"] = "confidence.tif"
    if probabilities is not None:
        write_raster(out / "probabilities.tif", probabilities.astype(np.uint8), crs=crs, transform=transform,
                     nodata=255)
        outputs["probabilities"] = "probabilities.tif"
    record = {"run_id": out.name, "created": "2024-01-01T00:00:00Z", "acquired": acquired, "outputs": outputs,
              "model": {"id": model_id, "version": "1.0.0", "trained": True}, "classes": list(classes)}
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def linear_model_package(path: str | os.PathLike) -> Path:
    """PixelLinear package whose logits are exactly ``x[0:3] * 0.01`` (x in DN): class = argmax of bands 1..3."""
    import torch

    from geoseg.model.card import ModelCard, Normalization, parse_classes
    from geoseg.model.package import save_package
    from geoseg.model.registry import build_model

    card = ModelCard(
        id="test-linear",
        architecture="PixelLinear",
        encoder=None,
        bands=BANDS4,
        classes=parse_classes([{"value": v, "name": n} for v, n in ((0, "water"), (1, "trees"), (2, "built"))]),
        normalization=Normalization("scale", (0.01,) * 4, (0.0,) * 4),
        tile_size=64,
        overlap=16,
        output_stride=1,
    )
    net = build_model("PixelLinear", None, 4, 3)
    head = net.get_submodule("head")
    assert isinstance(head, torch.nn.Conv2d)
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
        for k in range(3):
            head.weight[k, k, 0, 0] = 1.0
    return save_package(card, net, Path(path))


def unet_model_package(path: str | os.PathLike) -> Path:
    """A real (random-weight) smp Unet with a bounded receptive field (about 55 px): resnet18, depth 2."""
    import torch

    from geoseg.model.card import ModelCard, Normalization, parse_classes
    from geoseg.model.package import save_package
    from geoseg.model.registry import build_model

    params = {"encoder_depth": 2, "decoder_channels": [32, 16]}
    card = ModelCard(
        id="test-unet",
        architecture="Unet",
        encoder="resnet18",
        arch_params=params,
        bands=BANDS4,
        classes=parse_classes([{"value": v, "name": f"class{v}"} for v in range(4)]),
        normalization=Normalization("meanstd", (1100.0,) * 4, (300.0,) * 4),
        tile_size=256,
        overlap=128,
        output_stride=4,
    )
    torch.manual_seed(3)
    net = build_model("Unet", "resnet18", 4, 4, **params)
    return save_package(card, net, Path(path))
