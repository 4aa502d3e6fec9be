"""Shared fixtures; the helpers they build on are importable from :mod:`geoseg.testing`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from geoseg.testing import linear_model_package, unet_model_package

# Keep torch from grabbing every core while tests run in parallel with other work.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The versions that decide what the tests see: GDAL (drivers, COG), rasterio, torch, smp."""
    import rasterio

    versions = [f"GDAL {rasterio.__gdal_version__}", f"rasterio {rasterio.__version__}"]
    for name, module in (("torch", "torch"), ("smp", "segmentation_models_pytorch")):
        try:
            versions.append(f"{name} {__import__(module).__version__}")
        except ImportError:
            versions.append(f"{name} not installed")
    return ["geoseg: " + ", ".join(versions)]


@pytest.fixture(scope="session")
def linear_model(tmp_path_factory) -> Path:
    """PixelLinear package whose logits are exactly ``x[0:3] * 0.01`` (x in DN): class = argmax of bands 1..3."""
    return linear_model_package(tmp_path_factory.mktemp("models") / "linear")


@pytest.fixture(scope="session")
def unet_model(tmp_path_factory) -> Path:
    """A real (random-weight) smp Unet with a bounded receptive field (about 55 px): resnet18, depth 2."""
    return unet_model_package(tmp_path_factory.mktemp("models") / "unet")


@pytest.fixture()
def out(run_dir, tmp_path) -> Path:
    """A private copy of the requesting module's ``run_dir`` fixture (a finished run folder), so tests
    that add or change files do not see each other's."""
    dst = tmp_path / "out"
    shutil.copytree(run_dir, dst)
    return dst
